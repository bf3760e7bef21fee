"""The example's assets: which wheels the wheelhouse lacks, fetching only those, and the n-gram models' package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import EnvironmentBuildError
from autoglm_runtime.testing import build_wheel
from examples.model_server.assets import CORPUS, HERE, MODELS, fill_wheelhouse, missing


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip, run by the code under test, may not reach any index: a download attempt fails."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)


def test_missing_names_requirements_without_a_fitting_wheel(tmp_path: Path) -> None:
    build_wheel(tmp_path, "numpy", "1.26.4")
    build_wheel(tmp_path, "numpy", "2.1.0", tag="cp27-cp27m-win32")  # a wheel this interpreter cannot install
    wanted = [Requirement("numpy>=1.26,<1.27"), Requirement("numpy>=2,<3"), Requirement("ngramlm==1.1")]
    assert [str(r) for r in missing(wanted, tmp_path)] == ["numpy<3,>=2", "ngramlm==1.1"]


def test_a_filled_wheelhouse_is_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    build_wheel(tmp_path, "numpy", "1.26.4")
    build_wheel(tmp_path, "numpy", "2.0.2")
    manifests = [load_manifest(model) for model in sorted(MODELS.iterdir())]
    assert fill_wheelhouse(tmp_path, manifests) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ngramlm-1.2-py3-none-any.whl", "numpy-1.26.4-py3-none-any.whl", "numpy-2.0.2-py3-none-any.whl",
    ]  # fmt: skip


def test_a_wheel_that_cannot_be_fetched_is_a_coded_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    build_wheel(tmp_path, "numpy", "2.0.2")
    manifests = [load_manifest(MODELS / "words-numpy1")]
    with pytest.raises(EnvironmentBuildError) as info:
        fill_wheelhouse(tmp_path, manifests)
    assert info.value.code == "E0101"
    assert info.value.message.startswith(
        f"the wheels of model words-numpy1 (numpy<1.27,>=1.26) are not in the wheelhouse {tmp_path} and pip download "
        "could not fetch them (exit 1): "
    )
    assert info.value.message.endswith(
        "Start once with access to the package index, or copy the wheels into the wheelhouse"
    )


@pytest.fixture(scope="module")
def ngramlm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_ngramlm", HERE / "packages/ngramlm-1.2/ngramlm/__init__.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ngram_model_continues_its_corpus_and_stops_at_a_line_end(ngramlm: ModuleType) -> None:
    lm = ngramlm.NGramLM("the cat sat.\nthe dog ran.\n", unit="word", order=3)
    assert lm.complete("the cat", 10, temperature=0) == {
        "text": " sat.", "tokens": [" sat", "."], "finish_reason": "stop",
    }  # fmt: skip
    assert lm.complete("the cat", 1, temperature=0)["finish_reason"] == "length"
    chars = ngramlm.NGramLM("abcabc\n", unit="char", order=3)
    assert "".join(chars.generate("ab", 4, temperature=0)) == "cabc"


@pytest.mark.parametrize("temperature", [1e-3, 1e-10, 1e-300])
def test_a_tiny_temperature_samples_the_most_frequent_continuation(ngramlm: ModuleType, temperature: float) -> None:
    # counts ** (1 / temperature) overflowed to inf and numpy refused the NaN probabilities: a 500 (E0105) for
    # temperature 0.001, which the server accepts (0 to 2).
    for unit, order in (("word", 3), ("char", 6)):
        lm = ngramlm.NGramLM(CORPUS.read_text(encoding="utf-8"), unit=unit, order=order)
        context = [lm._index[token] for token in lm.tokens("The model server")]
        for token in lm.generate("The model server", 12, temperature=temperature, seed=1):
            nexts, counts = lm._distribution(context)
            chosen = lm._index[token.strip() or token]
            assert counts[list(nexts).index(chosen)] == counts.max()  # one of the most frequent (ties are drawn)
            context.append(chosen)


def test_sampling_is_seeded_and_stays_in_the_vocabulary(ngramlm: ModuleType) -> None:
    lm = ngramlm.NGramLM(CORPUS.read_text(encoding="utf-8"), unit="word", order=3)
    first = lm.complete("The model", 12, temperature=1.0, seed=7)
    assert lm.complete("The model", 12, temperature=1.0, seed=7) == first
    assert all(token.strip() in lm.vocabulary for token in first["tokens"])
    assert lm.info()["unit"] == "word"
    with pytest.raises(ValueError, match="unit must be 'word' or 'char', got 'byte'"):
        ngramlm.NGramLM("x", unit="byte")
