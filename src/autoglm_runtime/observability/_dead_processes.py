"""Taking the live gauges of processes that ended out of prometheus_client's multiprocess files.

What gunicorn's ``child_exit`` hook is for, done by the exporters of every process (see
:mod:`autoglm_runtime.observability.collectors`).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable

from autoglm_runtime._fork import after_fork_in_child

__all__ = ["NOT_EXPORTED", "reap_dead_processes"]

_log = logging.getLogger("autoglm_runtime.observability")
#: Logged when the multiprocess files could not be updated (see docs/error-codes.md).
NOT_EXPORTED = "E0004"
#: What a live gauges file moved aside by the process of pid ``N`` is named after: ``<file>.db.reaping-N``.
_ASIDE = ".reaping-"
#: One reap at a time in a process: a file moved aside under this process's pid is one it is reaping only while
#: it holds this (see :func:`_recover`).
_reaping = threading.Lock()


@after_fork_in_child
def _forget_parent() -> None:
    """In a forked child: a reap of the parent's may have held the lock at the fork, and never ends here."""
    global _reaping
    _reaping = threading.Lock()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def reap_dead_processes(directory: str, unreaped: set[int], running: Callable[[int], bool] = _running) -> None:
    """``mark_process_dead`` for each process whose live gauges are in ``directory`` but that no longer runs
    (``running`` tells, by pid), without losing the file of a new process given the same pid meanwhile
    (see :func:`_remove`).

    A file that cannot be removed (permissions, an I/O error) is logged once per process (``unreaped`` remembers
    which) and tried again at the next call; the others are removed all the same.

    What gunicorn's ``child_exit`` hook is for, done from every process instead: uvicorn ``--workers`` has no such
    hook and restarts a worker that died, whose last values (a frozen sync timestamp) were otherwise exported for
    good. Only while the files are named by pid (prometheus_client's default): this process's own file is there.
    """
    if os.name != "posix":  # (os.kill(pid, 0) asks whether a process runs on POSIX only)
        return
    with _reaping:
        _reap(directory, unreaped, running)


def _reap(directory: str, unreaped: set[int], running: Callable[[int], bool]) -> None:
    own = os.getpid()
    pids: set[int] = set()
    found_own = False
    for path in glob.glob(os.path.join(glob.escape(directory), "gauge_live*_*.db")):
        identifier = os.path.basename(path)[: -len(".db")].rpartition("_")[2]
        if not identifier.isdigit():
            return  # a process_identifier other than the pid: whether it runs cannot be told
        pid = int(identifier)
        found_own = found_own or pid == own
        if pid != own and not running(pid):
            pids.add(pid)
    if not found_own:
        return
    _recover(directory, own, running)
    unreaped &= pids  # (files removed since, by another process or by hand)
    for pid in sorted(pids):
        try:
            for path in glob.glob(os.path.join(glob.escape(directory), f"gauge_live*_{pid}.db")):
                _remove(path, pid, running)
        except OSError as exc:
            if pid not in unreaped:
                _log.warning(
                    "the live gauges of process %d, which ended, cannot be removed from %s (%s): its last values "
                    "stay in the exposition; make the directory writable by this server, or remove %s",
                    pid,
                    directory,
                    exc,
                    os.path.join(directory, f"gauge_live*_{pid}.db"),
                    extra={"error_code": NOT_EXPORTED},
                )
            unreaped.add(pid)
            continue
        unreaped.discard(pid)


def _recover(directory: str, own: int, running: Callable[[int], bool]) -> None:
    """Settle the files a reaper moved aside (see :func:`_remove`) and left there because it ended mid-reap (killed,
    out of memory), or failed to remove them: a file the reaper's pid does not run for any more (or this process's
    own, whose reaps take turns) goes back if its pid runs, as the reaper would have done, else it is removed.
    Left there, it would stay in the directory for good, and a live process's gauges moved aside with it would
    stay out of the exposition as long as that process ran.

    A file whose reaper runs (another process mid-reap, or a new one given its pid) is left to the next call.
    Another process settling the same file meanwhile is no error: the file is gone, or back in place.
    """
    for aside in glob.glob(os.path.join(glob.escape(directory), f"gauge_live*_*.db{_ASIDE}*")):
        path, _, reaper = aside.rpartition(_ASIDE)
        identifier = os.path.basename(path)[: -len(".db")].rpartition("_")[2]
        if not (reaper.isdigit() and identifier.isdigit()):
            continue  # (not a name this module gives)
        if int(reaper) != own and running(int(reaper)):
            continue
        try:
            if running(int(identifier)):
                _put_back(aside, path)
            else:
                os.remove(aside)
        except OSError:  # settled by another process first; or a directory this one may not change, whose own
            continue  # reaps fail and are logged (E0004): tried again at the next call


def _remove(path: str, pid: int, running: Callable[[int], bool]) -> None:
    """Remove ``path``, a live gauges file of ``pid`` found ended, unless a new process given ``pid`` has it open.

    Such a process opens the file under its old name (its name too) and writes its gauges there: removed then,
    they would be missing from the exposition for as long as it runs. So the file is first moved aside, out of the
    exposition (prometheus_client reads ``*.db`` files only) and out of reach (a process that opens the name from
    then on makes a file of its own). If ``pid`` runs again by then, the file may be that process's and goes
    back (unless the process made its own since: the file moved aside is then the ended one's); if not, no
    process can have it open, and it is removed.
    """
    aside = f"{path}{_ASIDE}{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process, or the server's hook, removed it first
        return
    except OSError as exc:  # (said of the file the operator knows, not of the name it was to be moved to)
        raise OSError(exc.errno, exc.strerror, path) from exc
    if running(pid):
        _put_back(aside, path)
        return
    try:
        os.remove(aside)
    except OSError as exc:
        _put_back(aside, path)  # (exported as before: logged, and tried again at the next mirror)
        raise OSError(exc.errno, exc.strerror, path) from exc


def _put_back(aside: str, path: str) -> None:
    """Move ``aside`` back to ``path``, unless a file is there by now (then ``aside`` is removed)."""
    try:
        os.link(aside, path)  # (fails, unlike a rename, if a new process made its own file there since)
    except FileExistsError:
        pass
    except OSError:  # no hard link here (a file system without them, or a directory)
        if not os.path.lexists(path):
            os.rename(aside, path)
            return
    os.remove(aside)
