"""What a start of the example server started that outlives a request (model workers, a local ZooKeeper), and the
line that says, after Ctrl-C or SIGTERM, that they are stopped.

Filled as the start goes; read once everything is closed, from the parts' own state (a worker's pid, whether the
ZooKeeper process runs), so the line says what is true rather than what was meant to happen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoglm_runtime.isolation import LoadedModel
from examples.model_server.store import ConfigStore


@dataclass
class Started:
    """The models loaded so far and the config store opened (with its local ZooKeeper, if one was started)."""

    models: list[LoadedModel] = field(default_factory=list)
    store: ConfigStore | None = None

    def stopped_line(self) -> str | None:
        """``stopped: 3 model workers (chars-numpy2 1, words-numpy1 2) and the local ZooKeeper at HOSTS (...)``,
        naming anything still running instead; None when nothing was started."""
        stopped: list[str] = []
        running: list[str] = []
        workers = {model.name: model.health()["replicas"] for model in self.models}
        total = sum(len(replicas) for replicas in workers.values())
        if total:
            each = ", ".join(f"{name} {len(replicas)}" for name, replicas in sorted(workers.items()))
            stopped.append(f"{total} model worker{'s' if total != 1 else ''} ({each})")
        running += [
            f"model {name} worker pid {replica['pid']}"
            for name, replicas in sorted(workers.items())
            for replica in replicas
            if replica["pid"] is not None
        ]
        zookeeper = self.store.zookeeper if self.store is not None else None
        if zookeeper is not None and self.store is not None:
            where = f"the local ZooKeeper at {zookeeper.hosts}"
            if zookeeper.running:
                running.append(where)
            else:
                stopped.append(f"{where} (its data stays in {self.store.data})")
        if running:
            return f"still running after the stop: {', '.join(running)}"
        return f"stopped: {' and '.join(stopped)}" if stopped else None
