"""Build the example's assets offline: a wheelhouse of its local packages and a small tokenizer.

Nothing is downloaded: the two conflictlib releases are built from ``packages/`` with the SDK's wheel
builder, and the tokenizer is trained on ``corpus.txt``.
"""

from __future__ import annotations

from pathlib import Path

from autoglm_runtime.testing.wheels import build_wheel

HERE = Path(__file__).resolve().parent


def build_wheelhouse(target: Path) -> Path:
    """Build a wheel for each ``packages/<name>-<version>/`` folder into ``target``; returns ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted((HERE / "packages").iterdir()):
        name, _, version = source.name.rpartition("-")
        modules = {
            path.relative_to(source).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(source.rglob("*.py"))
        }
        build_wheel(target, name, version, modules=modules)
    return target


def build_tokenizer(target: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus.txt`` and save it as ``target`` (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    lines = (HERE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator(lines, trainer=trainer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return target
