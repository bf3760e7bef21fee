"""One metadata directory (``.dist-info`` / ``.egg-info``) described as the probe reports it: stdlib only.

Runs inside the checked interpreter (see ``probe.py``), on every Python the probe supports. Headers are read
exactly as ``importlib.metadata`` reads them; ``modules`` comes from RECORD (else ``top_level.txt``).
"""

from __future__ import annotations

import os

_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")
#: The metadata directory of an egg (``six-1.16.0-py3.11.egg``, a directory or a zip file on the path).
EGG_INFO = "EGG-INFO"


def _is_field_name(name: str) -> bool:
    """Whether ``name`` (the text before a line's first colon) makes the line a header field for
    ``email.feedparser``: printable ASCII other than space (its ``[\\041-\\071\\073-\\176]*``), empty
    included."""
    return name.isascii() and name.isprintable() and " " not in name


def _headers(text: str) -> dict[str, list[str]]:
    """RFC 822 headers of a METADATA / PKG-INFO file, read exactly as ``importlib.metadata`` reads them.

    ``importlib.metadata`` parses with :mod:`email` (policy ``compat32``): a line starting with a space or
    a tab continues the field before it, even when it holds nothing but whitespace (meson-python and
    hatchling write multi-line ``License`` fields so); only a truly empty line, or a line that is neither a
    field nor a continuation, ends the headers. A value keeps its folded line breaks, as ``get_all`` does.
    The probe imports no ``re`` (its import costs more than reading every header), hence string methods.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    end = text.find("\n\n")  # the body is never read: the first empty line ends the headers
    out: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in (text if end < 0 else text[:end]).split("\n"):
        if line[:1] in (" ", "\t"):
            if last is not None:
                last[-1] += "\n" + line
            continue
        key, colon, value = line.partition(":")
        if not colon or not _is_field_name(key):
            break  # an empty line, or the body begins without one
        last = out.setdefault(key.lower(), [])
        last.append(value.lstrip(" \t"))
    return {key: [v.rstrip("\n") for v in values] for key, values in out.items()}


def _egg_requires(text: str, extras: list[str] | None = None) -> list[str]:
    """``requires.txt`` of an egg-info directory, converted to Requires-Dist strings; ``extras`` receives the
    extras it has sections for (``[name]``, ``[name:marker]``), as pip lists them for an egg-info whose PKG-INFO
    names none."""
    out: list[str] = []
    marker = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            extra, _, env = line[1:-1].partition(":")
            if extras is not None and extra.strip() and extra.strip() not in extras:
                extras.append(extra.strip())
            parts = []
            if env.strip():
                parts.append(f"({env.strip()})")
            if extra.strip():
                parts.append(f'extra == "{extra.strip()}"')
            marker = " and ".join(parts)
            continue
        out.append(f"{line}; {marker}" if marker else line)
    return out


def _top_name(path: str) -> tuple[str, bool] | None:
    """The import name a RECORD path makes importable, and whether it is the package's marker file."""
    parts = path.replace("\\", "/").split("/")
    if len(parts) == 1:
        name = parts[0]
        if name.endswith(".pth") or not name.endswith(_MODULE_SUFFIXES):
            return None
        return name.split(".", 1)[0], True
    if len(parts) == 2 and parts[1] == "__init__.py":
        return parts[0], True
    return None


def _modules(meta_dir: str, record: str | None, location: str, errors: list[str]) -> dict[str, list[str | None]]:
    """Top-level import names with their marker file and RECORD hash (from RECORD, else top_level.txt)."""
    out: dict[str, list[str | None]] = {}
    if record is not None:
        for line in record.splitlines():
            slash, comma = line.find("/"), line.find(",")
            if slash >= 0 and (slash < comma or comma < 0) and "__init__.py" not in line:
                continue  # a path inside a directory, not a package's marker: most of a RECORD, skipped cheaply
            path, _, rest = line.partition(",")
            if line.count("/", 0, len(path)) + line.count("\\", 0, len(path)) > 1:
                continue  # deeper than a package's __init__.py (most of a RECORD): no import name of its own
            found = _top_name(path.strip().strip('"'))
            if found is None:
                continue
            name, _ = found
            if not name.isidentifier() or name.startswith("__editable__"):
                continue
            digest = rest.split(",", 1)[0] or None
            out.setdefault(name, [path.strip().strip('"'), digest])
        return out
    text = _read_meta(meta_dir, "top_level.txt", errors)
    for name in (n.strip() for n in (text or "").splitlines()):
        if not name:
            continue
        for rel in (f"{name}/__init__.py", f"{name}.py"):
            if os.path.exists(os.path.join(location, rel)):
                out[name] = [rel, None]
                break
    return out


def _read(path: str) -> str | None:
    """The UTF-8 text of ``path``, ``None`` when it does not exist; raises ``OSError`` or ``ValueError``.

    The text ``open(path, encoding="utf-8").read()`` gives (universal newlines), read with ``os.read``: the
    probe reads two or three files per distribution, and the file objects cost more than the reading.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    chunks: list[bytes] | None = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)  # type: ignore[union-attr]
    except OSError:
        chunks = None  # a directory, an I/O error: reported below as open() reports it (with the path)
    finally:
        os.close(fd)
    if chunks is None:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    text = b"".join(chunks).decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _read_zipped(archive: str, member: str) -> str | None:
    """The UTF-8 text of ``member`` of the zip file ``archive`` (a zipped egg), ``None`` when it has no such
    member; raises ``OSError`` or ``ValueError``, as :func:`_read` does."""
    import zipfile  # only for a zipped egg, which few environments hold

    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    except KeyError:
        return None
    except zipfile.BadZipFile as exc:
        raise OSError(f"{archive} is not a zip file: {exc}") from exc
    text = data.decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _read_meta(meta_dir: str, name: str, errors: list[str], archive: str | None = None) -> str | None:
    """A metadata file's text (from the zipped egg ``archive`` when given); one that cannot be read or
    decoded is added to ``errors`` and gives ``None``."""
    try:
        if archive is not None:
            return _read_zipped(archive, f"{EGG_INFO}/{name}")
        return _read(os.path.join(meta_dir, name))
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, or a NUL in the path
        errors.append(f"{name} cannot be read: {exc}")
        return None


def _editable_root(meta_dir: str, record: str | None) -> str | None:
    """The project directory of an editable install (PEP 660 ``direct_url.json``), else ``None``."""
    if record is None or "direct_url.json" not in record:
        return None
    try:
        text = _read(os.path.join(meta_dir, "direct_url.json")) or "{}"
        # Installers write one for every install from a file or URL; only an editable one names the key
        # (spelled out, unless escaped).
        if "editable" not in text and "\\u" not in text:
            return None
        import json  # only for an install that may be editable: json's import brings re

        data = json.loads(text)
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    dir_info = data.get("dir_info") if isinstance(data, dict) else None
    if not isinstance(url, str) or not isinstance(dir_info, dict) or dir_info.get("editable") is not True:
        return None
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit

    return os.path.normpath(unquote(urlsplit(url).path))


def _unfold(value: str) -> str:
    """A header value with its folding line breaks removed (RFC 5322 unfolding), then stripped."""
    if "\r" in value:  # never from describe, whose text has its line ends normalised
        import re

        value = re.sub(r"\r?\n(?=[ \t])|\r(?=[ \t])", "", value)
    elif "\n" in value:  # most values are one line: nothing to unfold
        value = value.replace("\n ", " ").replace("\n\t", "\t")
    return value.strip()


def _metadata_headers(meta_dir: str, meta_name: str, archive: str | None, errors: list[str]) -> dict[str, list[str]]:
    """The headers of METADATA / PKG-INFO (``meta_dir`` itself when it is a file); problems go to ``errors``."""
    try:
        if archive is not None:
            text = _read_zipped(archive, f"{EGG_INFO}/{meta_name}")
        else:
            text = _read(os.path.join(meta_dir, meta_name)) if os.path.isdir(meta_dir) else _read(meta_dir)
    except (OSError, ValueError) as exc:
        errors.append(f"{meta_name} cannot be read: {exc}")
        return {}
    if text is None:
        errors.append(f"{meta_name} is missing")
    elif not text.strip():
        errors.append(f"{meta_name} is empty")
    elif text.startswith("\ufeff"):  # importlib.metadata reads no header after it: its first line is body
        errors.append(f"{meta_name} starts with a byte order mark (U+FEFF), so its headers cannot be read")
    else:
        headers = _headers(text)
        if not headers:  # the body from its first line on: nothing names the distribution
            errors.append(f"{meta_name} has no headers (its first line is not a field)")
        return headers
    return {}


def describe(location: str, entry: str) -> tuple[dict[str, object], str | None]:
    """Describe one ``.dist-info`` or ``.egg-info`` directory found in ``location``, or the ``EGG-INFO`` of
    the egg ``location`` (a directory or a zip file), with its RECORD text.

    The RECORD text (``None`` when there is none) is for the few distributions whose files must be compared.
    """
    meta_dir = os.path.join(location, entry)
    egg = entry.endswith(".egg-info") or entry == EGG_INFO
    archive = location if entry == EGG_INFO and os.path.isfile(location) else None  # a zipped egg
    errors: list[str] = []
    dist: dict[str, object] = {"name": None, "version": None, "location": location, "metadata_dir": meta_dir}
    meta_name = "PKG-INFO" if egg else "METADATA"
    headers = _metadata_headers(meta_dir, meta_name, archive, errors)
    for field in ("name", "version"):
        values = headers.get(field)
        if values and _unfold(values[0]):
            dist[field] = _unfold(values[0])
        elif headers:
            errors.append(f"{meta_name} has no {field.capitalize()} field")
    requires = [_unfold(r) for r in headers.get("requires-dist", [])]
    extras = [_unfold(e) for e in headers.get("provides-extra", [])]
    record: str | None = None
    if archive is not None or os.path.isdir(meta_dir):
        if egg and not (requires and extras):  # PKG-INFO's fields first, as importlib.metadata and pip read them
            sections: list[str] = []
            egg_requires = _egg_requires(_read_meta(meta_dir, "requires.txt", errors, archive) or "", sections)
            requires = requires or egg_requires
            extras = extras or sections
        if archive is None:
            record = _read_meta(meta_dir, "RECORD", errors)
    # WHEEL's tags matter for compiled modules (a cp312 extension does not import on 3.11): read for the
    # distributions whose RECORD lists one, which keeps the read off the many pure ones.
    compiled = record is not None and (".so," in record or ".pyd," in record)
    wheel = _read_meta(meta_dir, "WHEEL", errors) if compiled else None
    python = headers.get("requires-python")
    editable = _editable_root(meta_dir, record)
    dist.update(
        requires=requires,
        requires_python=_unfold(python[0]) if python else None,
        provides_extra=extras,
        # An editable install's RECORD lists only its hook files: the project's modules are not its files.
        # A zipped egg's modules are no files in a directory that another distribution could overwrite.
        modules={} if editable or archive else _modules(meta_dir, record, location, errors),
        editable=editable,
        # the interpreters and platforms the wheel was built for, as pip check reads them
        wheel_tags=[_unfold(t) for t in _headers(wheel).get("tag", [])] if wheel else [],
        errors=errors,
        # last, as the cache's per-run update adds them: one key order, one JSON text for one description
        record_matches=None,
        clashes={},
        namespaces=[],
    )
    return dist, record
