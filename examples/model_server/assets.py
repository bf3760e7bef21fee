"""The example's assets in its state directory: a wheelhouse for the models' environments and a small tokenizer.

The wheelhouse holds the example's own package (``packages/ngramlm-1.2``, built here with the SDK's wheel
builder) and the real numpy wheels the two models pin. Those are the only downloads, made at first start with
``pip download`` from the package index; later starts find them in the wheelhouse and work offline. The
tokenizer is trained on ``corpus.txt``.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from autoglm_runtime.deps import ModelManifest
from autoglm_runtime.errors import EnvironmentBuildError
from autoglm_runtime.testing.wheels import build_wheel

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
CORPUS = HERE / "corpus.txt"

log = logging.getLogger("examples.model_server")


def build_local_wheels(target: Path) -> None:
    """Build a wheel for each ``packages/<name>-<version>/`` folder into ``target``."""
    for source in sorted((HERE / "packages").iterdir()):
        name, _, version = source.name.rpartition("-")
        modules = {
            path.relative_to(source).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(source.rglob("*.py"))
        }
        build_wheel(target, name, version, modules=modules, requires=["numpy>=1.26"])


def missing(requirements: Iterable[Requirement], wheelhouse: Path) -> list[Requirement]:
    """The requirements no wheel in ``wheelhouse`` meets for this interpreter (by name, version and tags)."""
    supported = set(sys_tags())
    found: list[tuple[str, str, bool]] = []
    for path in wheelhouse.glob("*.whl"):
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        found.append((name, str(version), not tags.isdisjoint(supported)))
    return [
        requirement
        for requirement in requirements
        if not any(
            name == canonicalize_name(requirement.name) and fits and requirement.specifier.contains(version, True)
            for name, version, fits in found
        )
    ]


def fill_wheelhouse(target: Path, manifests: Sequence[ModelManifest]) -> Path:
    """Make ``target`` hold a wheel for every requirement of ``manifests``; returns ``target``.

    Wheels of the example's own packages are built; each model's missing requirements are fetched with
    ``pip download`` (one call per model: their requirements conflict with each other). Nothing is fetched
    when the wheelhouse already has them, so later starts work offline.
    """
    target.mkdir(parents=True, exist_ok=True)
    build_local_wheels(target)
    for manifest in manifests:
        needed = missing(manifest.requirements, target)
        if not needed:
            continue
        wanted = [str(requirement) for requirement in needed]
        log.info("fetching %s for model %s into %s (first start only)", ", ".join(wanted), manifest.name, target)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(target)]
        done = subprocess.run(
            [*command, "--find-links", str(target), *wanted], capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or missing(needed, target):
            last = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise EnvironmentBuildError(
                f"the wheels of model {manifest.name} ({', '.join(wanted)}) are not in the wheelhouse {target} and "
                f"pip download could not fetch them (exit {done.returncode}): {last or 'no output'}\n"
                "Start once with access to the package index, or copy the wheels into the wheelhouse"
            )
    return target


#: The markers the models' chat templates write, each one token (as a real model's tokenizer has them).
SPECIAL_TOKENS = ("<s>", "</s>", "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")


def tokenizer_path(state: Path) -> Path:
    """Where the tokenizer of the current corpus and special tokens lives: a change to either gets a new one."""
    digest = hashlib.sha256(CORPUS.read_bytes() + "\0".join(SPECIAL_TOKENS).encode()).hexdigest()[:12]
    return state / f"tokenizer-{digest}.json"


def build_tokenizer(target: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE tokenizer with the chat templates' special tokens on ``corpus.txt`` and save it as
    ``target`` (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator(lines, trainer=trainer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return target
