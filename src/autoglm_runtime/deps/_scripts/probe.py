"""Describe an interpreter's installed distributions, as JSON (or marshal), using only the standard library.

``check-deps --python INTERPRETER`` runs this file with ``INTERPRETER -I probe.py``; it and the modules beside
it (:mod:`scan`, :mod:`metadata`, :mod:`markers`, :mod:`probe_cache`, :mod:`ownership`,
:mod:`sites`) must therefore import
nothing outside the standard library and run on every Python this project supports. Run as a script, this file
is compiled afresh each time, so it stays small; the modules beside it are imported and their byte code is cached. The
output is one JSON object (without ``--cache``, on CPython: the same object as marshal bytes in base64, see
:func:`_print_marshal`)::

    {"probe": 3, "executable": ..., "version": "3.11.7", "markers": {...PEP 508 environment...},
     "path": [...sys.path...], "base_site": [...], "distributions": [{"name", "version", "location",
     "metadata_dir", "requires", "requires_python", "provides_extra", "modules", "editable", "wheel_tags",
     "record_matches", "clashes", "namespaces", "errors"[, "same_files"]}, ...], "abiflags": ...,
     "binary_platform": [64, "glibc 2.36"]}

``distributions`` is in import-precedence order: ``sys.path`` order, then directory order, the order
``importlib.metadata`` finds them. ``modules`` maps each top-level import name a distribution installs to
``[RECORD path, RECORD hash]`` of the file that makes it importable (``pkg/__init__.py`` or ``mod.py``; a
namespace directory is no name a distribution owns); an editable install (``editable``: its project
directory) owns none. Where distributions of one directory claim one name, ``clashes`` maps it to whether
this distribution's files are the ones on disk, judged on every file they both list with different
hashes (compiled modules included); where copies of one distribution share a directory,
``record_matches`` says whether this copy's RECORD matches the files on disk, and ``same_files`` (only where
there is one) lists the metadata directories of the other copies that describe the same files (Debian ships a
``.dist-info`` and an ``.egg-info`` of one package so; the checker also requires one PEP 440 version);
``namespaces`` lists the names also claimed in other path entries whose ``__init__.py`` in this directory
declares a namespace.
``base_site`` lists the path entries that are the base interpreter's site directories, in a virtual
environment made with ``--system-site-packages`` (:mod:`sites`); empty elsewhere.
``errors`` lists metadata that could not be read; the checker turns those into ``invalid-metadata``
findings instead of failing.
Metadata directories named ``~...`` (left by an interrupted pip uninstall) are not distributions.

With ``--cache FILE`` the probe keeps in FILE what a later run need not work out again (:mod:`probe_cache`):
each metadata directory's description, each file-ownership decision, the marker environment and its own
last output, each reused only while what it was made from is unchanged; and what decides its ``sys.path``
(:mod:`path_stamp`), so that ``check-deps`` can call :func:`cached_output` in its own process while that
is unchanged instead of starting this interpreter.

``INTERPRETER -I -S _probe.py --base`` prints instead what every virtual environment of that interpreter
shares (see :func:`base_facts`); the environment builder caches it and reads a new environment's
distributions in-process with :func:`collect`.
"""

from __future__ import annotations

import gc
import os
import sys

if not __package__:  # run as a script: the relative imports below then find the modules beside this file
    _here = type(sys)("_autoglm_probe")  # a module named as no installed distribution is
    _here.__path__ = [os.path.dirname(os.path.abspath(__file__))]
    sys.modules[_here.__name__] = _here
    __package__ = _here.__name__

from .markers import binary_platform, marker_environment, python_version
from .scan import collect

TYPE_CHECKING = False  # typing's own flag costs the import of typing, in a script that must start fast
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MARSHAL_MARK",
    "OUTPUT_MARK",
    "PREFIX_PLACEHOLDER",
    "PROBE_FORMAT",
    "base_facts",
    "cached_output",
    "collect",
    "marker_environment",
    "probe",
    "python_version",
]

PROBE_FORMAT = 3
#: Written before the JSON object, so that output of ``.pth`` files run at start-up can be told apart.
OUTPUT_MARK = "\n@autoglm-runtime-probe@\n"
#: Written before the base64 of the description's marshal bytes (:func:`_print_marshal`) instead of
#: :data:`OUTPUT_MARK` and its JSON text, by a probe on CPython without a cache.
MARSHAL_MARK = "\n@autoglm-runtime-probe-marshal@\n"
#: The prefix :func:`base_facts` passes to ``site.getsitepackages``; a real prefix replaces it.
PREFIX_PLACEHOLDER = "/@autoglm-venv-prefix@"


#: The probe cache's key for the interpreter facts (metadata directories' keys are absolute paths).
FACTS_KEY = "@interpreter"


def _facts_inputs() -> list[object] | None:
    """All that ``platform`` computes the version and markers from on POSIX: ``sys.version`` (parsed for the
    version and implementation), ``os.uname()`` (system, release, version, machine) and ``sys.implementation``.
    ``None`` elsewhere (Windows asks the registry), where the facts are never cached."""
    if not hasattr(os, "uname"):
        return None
    impl = sys.implementation
    return [sys.version, list(os.uname()), impl.name, list(impl.version), os.name, sys.platform]


def _facts(cache: dict[str, object] | None, misses: list[str] | None = None) -> dict[str, object]:
    """The interpreter's version and marker environment, from ``cache`` while their inputs are unchanged
    (``misses`` receives :data:`FACTS_KEY` when they are computed)."""
    inputs = _facts_inputs()
    hit = cache.get(FACTS_KEY) if cache is not None else None
    if inputs is not None and isinstance(hit, list) and len(hit) == 2 and hit[0] == inputs:
        return dict(hit[1])
    facts: dict[str, object] = {"version": python_version(), "markers": marker_environment()}
    if cache is not None and inputs is not None:
        cache[FACTS_KEY] = [inputs, facts]
    if misses is not None:
        misses.append(FACTS_KEY)
    return facts


def _interpreter(cache: dict[str, object] | None = None, misses: list[str] | None = None) -> dict[str, object]:
    """What every description of the running interpreter starts with (``cache``, ``misses``: see :func:`_facts`)."""
    facts = _facts(cache, misses)
    return {
        "probe": PROBE_FORMAT,
        "executable": sys.executable,
        "version": facts["version"],
        "markers": facts["markers"],
        "path": list(sys.path),
        "base_site": _base_site(),
        "abiflags": getattr(sys, "abiflags", None),  # POSIX CPython: its ABI tag is cpXY + these
        "binary_platform": binary_platform(),
    }


def _base_site() -> list[str]:
    """:func:`sites.base_site` of ``sys.path``; imported only in a virtual environment (the one place it can
    find any)."""
    if sys.prefix == sys.base_prefix and sys.exec_prefix == sys.base_exec_prefix:
        return []
    from .sites import base_site

    return base_site(list(sys.path))


def probe() -> dict[str, object]:
    """The whole description of the running interpreter."""
    return {**_interpreter(), "distributions": collect(list(sys.path))}


def base_facts() -> dict[str, object]:
    """What a probe of any virtual environment of the running interpreter shares; run with ``-I -S``.

    ``path`` is ``sys.path`` before ``site`` adds anything (duplicates removed, as ``site`` does first);
    ``site_packages`` is ``site.getsitepackages`` for the prefix :data:`PREFIX_PLACEHOLDER`, so the
    interpreter's own rules (``sys.platlibdir``, version, free-threading suffix) name an environment's
    site directories.
    """
    import site  # with -S, importing site adds nothing to sys.path

    site.removeduppaths()
    return {
        **_interpreter(),
        "site_packages": site.getsitepackages([PREFIX_PLACEHOLDER]),
        "no_site": bool(sys.flags.no_site),
    }


#: The probe cache's key for the last output: ``[executable, path, metadata directories, JSON text]``.
OUTPUT_KEY = "@output"


def cached_output(cache_path: str, here: str | None = None, emit: Callable[[str], object] | None = None) -> str | None:
    """The description's JSON text, from and into the cache file ``cache_path``; ``emit`` receives it before
    the cache file is written (the reader need not wait for that).

    Without ``here`` it describes the running interpreter and records what decides its path
    (:func:`path_stamp.record`). With ``here`` (an interpreter's absolute path) it describes that interpreter
    from the running process, the same text it would print, when the cache's :data:`path_stamp.PATH_KEY`
    entry shows its path unchanged (:func:`path_stamp.holds`); else it returns ``None`` and changes nothing.
    """
    from . import path_stamp, probe_cache

    cache = probe_cache.load_cache(cache_path)
    stamped = cache.pop(path_stamp.PATH_KEY, None)
    if here is None:
        misses: list[str] = []
        interpreter = _interpreter(cache, misses)
        import time

        now = time.time_ns()
        recorded = path_stamp.record(now)
        now_ns: int | None = now
        entry = None if recorded is None else [*recorded, interpreter]
    else:
        if not path_stamp.holds(stamped, here) or stamped[3].get("executable") != here:  # type: ignore[index]
            return None
        misses, interpreter, now_ns = [], dict(stamped[3]), None  # type: ignore[index]
        entry = stamped  # type: ignore[assignment]
    last = cache.pop(OUTPUT_KEY, None)
    facts = cache.get(FACTS_KEY)
    path = list(interpreter["path"])  # type: ignore[call-overload]
    dists = collect(path, cache, now_ns, misses=misses)
    # Every part taken from the cache, the same directories in the same order: the very description the
    # cache's last run printed (each entry was stored by the run that printed it), so its text is reused.
    seen = [interpreter["executable"], path, [d["metadata_dir"] for d in dists]]
    same = isinstance(last, list) and len(last) == 4 and last[:3] == seen and isinstance(last[3], str)
    if same and not misses:
        text: str = last[3]  # type: ignore[index]
    else:
        import json

        text = json.dumps({**interpreter, "distributions": dists})  # dumps: only the one-shot encoder is C code
    if emit is not None:
        emit(text)
    if misses or not same or entry != stamped:
        if facts is not None:
            cache[FACTS_KEY] = facts  # collect keeps only the entries it made
        if entry is not None:
            cache[path_stamp.PATH_KEY] = entry
        cache[OUTPUT_KEY] = [*seen, text]
        probe_cache.save_cache(cache_path, cache)
    return text


def _main(argv: list[str]) -> None:
    # A short run that makes many small objects and no reference cycles worth collecting: the cyclic collector
    # would only walk them (about a tenth of the probe's time on a few hundred distributions).
    gc.disable()
    if argv == ["--base"]:
        import json

        sys.stdout.write(json.dumps(base_facts()))
        return
    cache_path = argv[1] if len(argv) == 2 and argv[0] == "--cache" else None
    if cache_path:
        cached_output(cache_path, emit=_print)
    elif sys.implementation.name == "cpython":
        _print_marshal(probe())
    else:
        import json

        _print(json.dumps(probe()))


def _print(text: str, mark: str = OUTPUT_MARK) -> None:
    # ``text`` is one line (JSON and base64 alike): the line end sets it apart from anything an exit handler
    # prints after it, as the mark does from what .pth files print before.
    sys.stdout.write(mark)
    sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _print_marshal(description: dict[str, object]) -> None:
    """Print ``description`` as :data:`MARSHAL_MARK` and base64 of its marshal (format 4) bytes.

    ``json`` would cost the probe the import of ``re`` (json's decoder imports it) and its encoding; marshal
    is built in, and CPython 3.4 and later all write and read format 4 for these types (dict, list, str, int,
    bool, None). Base64 keeps the output text, as a ``.pth`` file's output before the mark is.
    """
    import marshal
    from binascii import b2a_base64

    _print(b2a_base64(marshal.dumps(description, 4), newline=False).decode("ascii"), MARSHAL_MARK)


if __name__ == "__main__":
    _main(sys.argv[1:])
