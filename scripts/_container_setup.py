"""Helpers of scripts/container-zookeeper that are easier to get right (and test) in Python: stdlib only.

    python3 scripts/_container_setup.py containers-conf PATH   set podman's two settings in PATH, keep the rest
    python3 scripts/_container_setup.py mirror SUITE           print "URI COMPONENTS SIGNED-BY" of apt's source

Run by the system's python3 before any virtualenv exists, so it needs Python 3.8+ and nothing else.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

#: What podman needs in a sandbox: no default rlimits (they are refused), and runc (crun refuses them too).
PODMAN_SETTINGS = {("containers", "default_ulimits"): "[]", ("engine", "runtime"): '"runc"'}

_HEADER = re.compile(r"^\s*\[([A-Za-z0-9_.\-]+)\]\s*(#.*)?$")


def _value_end(lines: list[str], start: int) -> int:
    """Index after the last line of the value that begins on line ``start``: arrays may span lines."""
    depth, index = 0, start
    while index < len(lines):
        text = lines[index].split("#", 1)[0]
        depth += text.count("[") - text.count("]")
        index += 1
        if depth <= 0:
            break
    return index


def set_toml_keys(text: str, settings: dict[tuple[str, str], str]) -> str:
    """``text`` (a TOML file) with each ``(table, key)`` set to its value: an existing line (or multi-line
    value) of that key replaced, else the key added at the top of its table, else the table appended.
    Every other line, comment and table is kept as it was.

    >>> set_toml_keys('[engine]\\nruntime = "crun"\\n', {("engine", "runtime"): '"runc"'})
    '[engine]\\nruntime = "runc"\\n'
    """
    lines = text.splitlines()
    for (table, key), value in settings.items():
        current, table_at, done = None, None, False
        for index, line in enumerate(lines):
            match = _HEADER.match(line)
            if match:
                current = match.group(1)
                if current == table and table_at is None:
                    table_at = index
            elif line.lstrip().startswith("[["):
                current = None  # an array of tables ends the table before it
            elif current == table and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                rest = line.split("=", 1)[1]
                end = _value_end(lines, index) if rest.strip().startswith("[") else index + 1
                lines[index:end] = [f"{key} = {value}"]
                done = True
                break
        if done:
            continue
        if table_at is None:
            lines += (["", f"[{table}]"] if lines else [f"[{table}]"]) + [f"{key} = {value}"]
        else:
            lines.insert(table_at + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def configure_containers_conf(path: Path) -> bool:
    """Set :data:`PODMAN_SETTINGS` in ``path`` (created if missing, the original kept as a backup);
    True when the file changed."""
    before = path.read_text("utf-8") if path.exists() else ""
    after = set_toml_keys(before, PODMAN_SETTINGS)
    if after == before:
        return False
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".autoglm-backup"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(after, "utf-8")
    return True


def _deb822_sources(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and last:
                fields[last] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def apt_mirror(suite: str, etc_apt: Path = Path("/etc/apt")) -> tuple[str, str, str] | None:
    """``(uri, "main,contrib", signed_by or "")`` of the first apt source of type ``deb`` that serves
    ``suite``, from ``sources.list``, ``sources.list.d/*.list`` and ``sources.list.d/*.sources``."""
    folder = etc_apt / "sources.list.d"
    for path in [etc_apt / "sources.list", *sorted(folder.glob("*.list")), *sorted(folder.glob("*.sources"))]:
        if not path.is_file():
            continue
        text = path.read_text("utf-8", "replace")
        if path.suffix == ".sources":
            for fields in _deb822_sources(text):
                if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                    continue
                uris = fields.get("uris", "").split()
                if suite in fields.get("suites", "").split() and uris:
                    components = ",".join(fields.get("components", "main").split())
                    return uris[0], components, fields.get("signed-by", "")
            continue
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            signed = re.search(r"signed-by=([^\s\]]+)", line)
            words = re.sub(r"\[[^\]]*\]", " ", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1], ",".join(words[3:]) or "main", signed.group(1) if signed else ""
    return None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "containers-conf":
        path = Path(argv[2])
        if configure_containers_conf(path):
            print(f"container-zookeeper: set podman's default_ulimits and runtime in {path}", file=sys.stderr)
        return 0
    if len(argv) == 3 and argv[1] == "mirror":
        found = apt_mirror(argv[2])
        if found is None:
            print(f"container-zookeeper: no apt source serves {argv[2]!r}; cannot choose a mirror", file=sys.stderr)
            return 1
        uri, components, signed_by = found
        print(uri, components, signed_by or "-")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
