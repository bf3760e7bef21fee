"""words-numpy1: a word-level trigram model on numpy 1.26, trained on the example's corpus when it loads."""

from pathlib import Path

import ngramlm
import numpy

#: The corpus shipped with the example (examples/model_server/corpus.txt).
CORPUS = Path(__file__).resolve().parents[2] / "corpus.txt"


def load() -> ngramlm.Served:
    # The manifest pins numpy 1.26; say so at once should an environment ever hold another numpy.
    if not numpy.__version__.startswith("1.26."):
        raise RuntimeError(f"words-numpy1 needs numpy 1.26, this environment has numpy {numpy.__version__}")
    return ngramlm.Served(ngramlm.NGramLM(CORPUS.read_text(encoding="utf-8"), unit="word", order=3))
