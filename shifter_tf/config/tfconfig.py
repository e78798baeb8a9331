"""TF_CONFIG, the cluster of a multi-worker run, parsed and checked before TensorFlow loads:
one ConfigError naming the key at fault (config rules and the CLI call it; the
`distributed` phase uses the `Cluster` it returns)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from shifter_tf.errors import ConfigError

EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')


@dataclass
class Cluster:
    """The TF_CONFIG cluster as this process sees it."""
    jobs: dict[str, list[str]]       # "chief" (0 or 1 address) and "worker" -> host:port
    task_type: str
    index: int

    @property
    def tasks(self) -> list[tuple[str, int, str]]:
        """(type, index, address) of every task, chief first: TF's worker order."""
        return [(j, i, a) for j in ("chief", "worker") for i, a in enumerate(self.jobs.get(j, []))]

    @property
    def num_workers(self) -> int:
        return len(self.tasks)

    @property
    def is_chief(self) -> bool:
        """TF's rule: the `chief` task, else worker 0."""
        return (self.task_type == "chief" or
                (self.task_type == "worker" and self.index == 0 and "chief" not in self.jobs))

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index}"

    @property
    def leader(self) -> str:
        return "/job:chief/replica:0/task:0" if "chief" in self.jobs else \
            "/job:worker/replica:0/task:0"


def _bad(msg: str) -> Exception:
    return ConfigError(f"TF_CONFIG: {msg}")


def parse_tf_config(environ: Optional[dict] = None, required: bool = True) -> Optional[Cluster]:
    """The cluster from TF_CONFIG; ConfigError naming the key at fault. None if unset and not
    `required`."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        if not required:
            return None
        raise _bad(f"not set; train.strategy multi_worker needs the cluster on every worker, e.g. "
                   f"TF_CONFIG='{EXAMPLE}' (or `--workers N` to try it on this machine)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(doc, dict):
        raise _bad(f"expected a JSON object, got {type(doc).__name__}")
    cluster = doc.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise _bad(f"cluster: expected an object of job name -> list of host:port, got "
                   f"{cluster!r}; e.g. {EXAMPLE}")
    seen: dict[str, str] = {}
    for job, addrs in cluster.items():
        if job not in ("chief", "worker"):
            raise _bad(f"cluster.{job}: unsupported job (MultiWorkerMirroredStrategy takes "
                       "chief and worker)")
        if not isinstance(addrs, list) or not addrs:
            raise _bad(f"cluster.{job}: expected a non-empty list of host:port, got {addrs!r}")
        if job == "chief" and len(addrs) != 1:
            raise _bad(f"cluster.chief: expected one address, got {len(addrs)}")
        for i, a in enumerate(addrs):
            host, _, port = a.rpartition(":") if isinstance(a, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad(f"cluster.{job}[{i}]: expected host:port, got {a!r}")
            if a in seen:
                raise _bad(f"cluster.{job}[{i}]: {a} is also {seen[a]}")
            seen[a] = f"cluster.{job}[{i}]"
    task = doc.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str) or \
            type(task.get("index")) is not int:
        raise _bad(f'task: expected {{"type": "worker", "index": 0}}, got {task!r}')
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise _bad(f"task.type: {kind!r} is not a job of the cluster ({', '.join(cluster)})")
    if not 0 <= index < len(cluster[kind]):
        raise _bad(f"task.index: {index} is outside cluster.{kind} "
                   f"(indices 0..{len(cluster[kind]) - 1})")
    return Cluster({j: list(cluster[j]) for j in cluster}, kind, index)
