"""Build small, real wheels offline, for tests of dependency checks and isolated environments.

A wheel is a zip file with a ``.dist-info`` folder; writing one directly needs no build backend and no
network, so a test can make exactly the distributions it needs::

    from autoglm_runtime.testing.wheels import build_wheel
    build_wheel(tmp_path / "wheels", "conflictlib", "1.0",
                modules={"conflictlib/__init__.py": "VERSION = '1.0'\\n"},
                requires=["numpy<2"])

The wheels install with pip or uv like any other (``--no-index --find-links DIR``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["build_wheel", "wheel_filename"]

_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so the same inputs give byte-identical wheels


def _escape(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    """The file name pip expects for a wheel of ``name`` ``version``."""
    return f"{_escape(name)}-{version}-{tag}.whl"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    directory: Path | str,
    name: str,
    version: str,
    *,
    modules: Mapping[str, str | bytes] | None = None,
    requires: Iterable[str] = (),
    extras: Mapping[str, Iterable[str]] | None = None,
    requires_python: str | None = None,
    top_level: Iterable[str] | None = None,
    tag: str = "py3-none-any",
    headers: Iterable[str] = (),
) -> Path:
    """Write a wheel of ``name`` ``version`` into ``directory`` and return its path.

    ``modules`` maps paths inside the wheel to file contents (by default one package named after the
    distribution, whose ``__version__`` is ``version``). ``requires`` are PEP 508 strings; ``extras`` maps an
    extra to its requirements (written as ``Requires-Dist: x; extra == "name"``). ``top_level`` overrides
    the ``top_level.txt`` names (by default the first path segment of each module). ``headers`` are more
    METADATA lines written verbatim after ``Version``, folded as a build backend folds them (meson-python
    and hatchling continue a multi-line ``License`` with lines of only spaces).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if modules is None:
        package = _escape(name).lower()
        modules = {f"{package}/__init__.py": f"__version__ = {version!r}\n"}
    dist_info = f"{_escape(name)}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata.extend(headers)
    if requires_python is not None:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata.extend(f"Requires-Dist: {req}" for req in requires)
    for extra, reqs in (extras or {}).items():
        metadata.append(f"Provides-Extra: {extra}")
        for req in reqs:
            # Parenthesise an existing marker: "a or b and extra" would bind the extra to b alone.
            spec, _, marker = req.partition(";")
            condition = f'({marker.strip()}) and extra == "{extra}"' if marker.strip() else f'extra == "{extra}"'
            metadata.append(f"Requires-Dist: {spec.strip()}; {condition}")
    names = (
        sorted(top_level)
        if top_level is not None
        else sorted({p.split("/", 1)[0].removesuffix(".py") for p in modules if not p.endswith(".pth")})
    )
    files: dict[str, bytes] = {
        path: content.encode("utf-8") if isinstance(content, str) else content for path, content in modules.items()
    }
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode("utf-8")
    files[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: autoglm-runtime\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    files[f"{dist_info}/top_level.txt"] = ("".join(f"{n}\n" for n in names)).encode("utf-8")
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode("utf-8")

    target = out / wheel_filename(name, version, tag)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(target)
    return target
