"""Taking the live gauges of processes that ended out of prometheus_client's multiprocess files.

What gunicorn's ``child_exit`` hook is for, done by the exporters of every process (see
:mod:`autoglm_runtime.observability.collectors`).
"""

from __future__ import annotations

import glob
import logging
import os

__all__ = ["NOT_EXPORTED", "reap_dead_processes"]

_log = logging.getLogger("autoglm_runtime.observability")
#: Logged when the multiprocess files could not be updated (see docs/error-codes.md).
NOT_EXPORTED = "E0004"


def reap_dead_processes(directory: str, unreaped: set[int]) -> None:
    """``mark_process_dead`` for each process whose live gauges are in ``directory`` but that no longer runs.

    A file that cannot be removed (permissions, an I/O error) is logged once per process (``unreaped`` remembers
    which) and tried again at the next call; the others are removed all the same.

    What gunicorn's ``child_exit`` hook is for, done from every process instead: uvicorn ``--workers`` has no such
    hook and restarts a worker that died, whose last values (a frozen sync timestamp) were otherwise exported for
    good. Only while the files are named by pid (prometheus_client's default): this process's own file is there.
    """
    if os.name != "posix":  # (os.kill(pid, 0) asks whether a process runs on POSIX only)
        return
    from prometheus_client.multiprocess import mark_process_dead

    own = os.getpid()
    pids: set[int] = set()
    found_own = False
    for path in glob.glob(os.path.join(glob.escape(directory), "gauge_live*_*.db")):
        identifier = os.path.basename(path)[: -len(".db")].rpartition("_")[2]
        if not identifier.isdigit():
            return  # a process_identifier other than the pid: whether it runs cannot be told
        pid = int(identifier)
        found_own = found_own or pid == own
        if pid != own and not _running(pid):
            pids.add(pid)
    if not found_own:
        return
    unreaped &= pids  # (files removed since, by another process or by hand)
    for pid in sorted(pids):
        try:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except FileNotFoundError:  # another process, or the server's hook, removed it first
            pass
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


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
