"""chars-numpy2: a character-level 6-gram model on numpy 2, trained on the example's corpus when it loads."""

from pathlib import Path

import ngramlm
import numpy

#: The corpus shipped with the example (examples/model_server/corpus.txt).
CORPUS = Path(__file__).resolve().parents[2] / "corpus.txt"


def load() -> ngramlm.Served:
    # The manifest pins numpy 2; say so at once should an environment ever hold another numpy.
    if int(numpy.__version__.split(".")[0]) != 2:
        raise RuntimeError(f"chars-numpy2 needs numpy 2, this environment has numpy {numpy.__version__}")
    return ngramlm.Served(ngramlm.NGramLM(CORPUS.read_text(encoding="utf-8"), unit="char", order=6))
