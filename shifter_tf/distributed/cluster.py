"""Multi-worker training on TensorFlow's MultiWorkerMirroredStrategy, made safe to operate.

What `train.strategy: multi_worker` needs beyond `tf.distribute` itself, in one place:
- TF_CONFIG is parsed and checked before TensorFlow loads by `shifter_tf.config.tfconfig`.
- `strategy`: the process's one strategy: peers awaited in Python first, then the coordination
  service's register/heartbeat timeouts and the collectives' timeout set to
  `train.peer_timeout`; SIGTERM/SIGINT and a stuck start-up handled by `shifter_tf.distributed.sentinel`.
- `local_run`: TensorFlow's multi-worker saving pattern: the chief writes the run folder, other
  workers write to a temporary folder they delete. On `--resume` the chief broadcasts the run's
  state (config, rewind point, finished levels) through the strategy, so no worker but the chief
  needs to see the run folder (it may live on the chief's disk only).
- `check_identical`: every worker must hold the same masks; a digest is all-gathered and
  compared, and a difference is an error naming the worker.
- `launch_local`: N workers of one command on 127.0.0.1 (`shifter-tf train --workers N`).

Nothing here imports TensorFlow at module level: the CLI checks TF_CONFIG before it loads.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Optional

from shifter_tf.distributed import sentinel
from shifter_tf.distributed.sentinel import abandon  # noqa: F401  (the CLI's way out of a lost cluster)
from shifter_tf.config.tfconfig import Cluster, parse_tf_config  # noqa: F401 (API)
from shifter_tf.errors import ClusterError  # noqa: F401 (raised here)

CLUSTER_ERRORS = ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError",
                  "InternalError", "UnknownError", "FailedPreconditionError")


_STATE: dict[str, Any] = {"cluster": None, "strategy": None}


def as_cluster_error(e: BaseException) -> Optional[ClusterError]:
    """A TensorFlow error that means the cluster broke (peer died, unreachable, timed out),
    as one line; None for anything else or outside a multi-worker run."""
    if isinstance(e, ClusterError):
        return e
    if _STATE["strategy"] is None or type(e).__name__ not in CLUSTER_ERRORS:
        return None
    first = next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)
    first = first.split("}}")[-1].strip()[:200]
    return ClusterError(f"{_STATE['cluster'].name}: lost the cluster ({type(e).__name__}: "
                        f"{first}); a peer died, stopped or timed out after train.peer_timeout; "
                        "restart every worker with --resume")


# ---------------------------------------------------------------- the strategy
def strategy(peer_timeout: float):
    """The process's MultiWorkerMirroredStrategy over the TF_CONFIG cluster (created once)."""
    if _STATE["strategy"] is not None:
        return _STATE["strategy"]
    c = parse_tf_config()
    _STATE["cluster"] = c
    sentinel.start(f"shifter-tf ({c.name} of {c.num_workers})")
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as pb
    from tensorflow.python.eager import context

    me = dict(((k, i), a) for k, i, a in c.tasks)[(c.task_type, c.index)]
    sentinel.rendezvous(c.name, me, _peers(c), peer_timeout)
    ms = int(peer_timeout * 1000)
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=c.leader, cluster_register_timeout_in_ms=ms,
        heartbeat_timeout_in_ms=ms, shutdown_barrier_timeout_in_ms=ms,
        coordinated_jobs=[pb.CoordinatedJob(name=j, num_tasks=len(a)) for j, a in c.jobs.items()])
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=peer_timeout)
    sentinel.tell(arm=peer_timeout + 10, peers=_peers(c),
                  message=f"{sentinel.who()}: error: the cluster did not form within {peer_timeout:.0f} s "
                          "(train.peer_timeout): {gone}; start every worker with the same "
                          "TF_CONFIG cluster")
    try:
        try:
            s = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
            _allreduce(s, [1])                         # every worker is up
        except tf.errors.OpError as e:
            gone = sentinel.unreachable(_peers(c))
            raise ClusterError(f"{c.name}: the cluster did not form within {peer_timeout:.0f} s "
                               f"(train.peer_timeout): "
                               f"{'no answer from ' + ', '.join(gone) if gone else type(e).__name__}"
                               "; start every worker with the same TF_CONFIG cluster") from None
    finally:
        sentinel.tell(arm=None)
    sentinel.reclaim_signals()
    _STATE["strategy"] = s
    return s


def _peers(c: Cluster) -> list[list[str]]:
    """[name, host:port] of every other task."""
    return [[f"{k} {i}", a] for k, i, a in c.tasks if (k, i) != (c.task_type, c.index)]


def cluster_of(strategy) -> Optional[Cluster]:
    """The cluster if `strategy` is this process's multi-worker strategy, else None."""
    return _STATE["cluster"] if strategy is not None and strategy is _STATE["strategy"] else None


def _allreduce(strategy, values) -> Any:
    """Sum int64 values over the workers (each worker's single replica contributes them)."""
    import numpy as np
    import tensorflow as tf

    arr = np.asarray(values, np.int64)
    v = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(arr))
    return np.asarray(strategy.reduce("SUM", v, axis=None))


def broadcast_bytes(strategy, data: Optional[bytes]) -> bytes:
    """The chief's `data` on every worker, through the strategy's own all-reduce."""
    import numpy as np

    c = _STATE["cluster"]
    mine = data if c.is_chief else b""
    n = int(_allreduce(strategy, [len(mine or b"")])[0])
    padded = (mine or b"\0" * n) + b"\0" * (-n % 4)
    words = np.frombuffer(padded, np.int32).astype(np.int64)
    if not c.is_chief:
        words[:] = 0
    out = _allreduce(strategy, words) if n else np.zeros(0, np.int64)
    return out.astype(np.int32).tobytes()[:n]


# ---------------------------------------------------------------- where each worker writes
def _pack(run: Path) -> bytes:
    """The files a resumed run reads: the run's top-level files, every level's metrics and the
    last finished level whole."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = sorted(run.iterdir()) if run.is_dir() else []
        for f in files:     # config.yaml, rewind.npz, the recorded normalisation, lottery.json
            if f.is_file() and not f.name.startswith("."):
                tar.add(f, f.name)
        levels = sorted(p for p in (run / "levels").glob("level_*")
                        if (p / "metrics.json").is_file()) if (run / "levels").is_dir() else []
        for p in levels:
            tar.add(p / "metrics.json", f"levels/{p.name}/metrics.json")
        if levels:
            for f in sorted(levels[-1].iterdir()):
                if f.is_file() and f.name != "metrics.json":
                    tar.add(f, f"levels/{levels[-1].name}/{f.name}")
    return buf.getvalue()


def local_run(run: str | Path, strategy, config: Optional[dict] = None) -> Path:
    """The folder this worker writes its copy of the run to: `run` on the chief (and outside a
    multi-worker run); on other workers a temporary folder holding the chief's state of the run,
    deleted at exit. `config` (the run's, as a dict) must be the same on every worker."""
    run = Path(run)
    c = cluster_of(strategy)
    if c is None:
        return run
    if config is not None:
        same = {k: v for k, v in config.items() if k != "train"}
        same["train"] = {k: v for k, v in config["train"].items() if k != "verbose"}
        check_identical(strategy, "the config", config=json.dumps(same, sort_keys=True))
    state = broadcast_bytes(strategy, _pack(run) if c.is_chief else None)
    if c.is_chief:
        return run
    tmp = Path(tempfile.mkdtemp(prefix=f"shifter-tf-{c.task_type}{c.index}-"))
    sentinel.add_tmp(tmp)
    with tarfile.open(fileobj=io.BytesIO(state)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


def check_identical(strategy, what: str, **values: Any) -> None:
    """Raise ClusterError unless every worker holds the same `values` (numpy arrays, numbers,
    dicts of them): a SHA-256 digest of each worker's values is all-gathered and compared."""
    import numpy as np

    c = cluster_of(strategy)
    if c is None:
        return
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                feed(v[k])
        elif v is None or isinstance(v, (str, bool, int, float)):
            h.update(repr(v).encode())
        else:
            a = np.asarray(v)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    feed(values)
    mine = np.frombuffer(h.digest()[:16], np.int32).astype(np.int64)
    me = [t[:2] for t in c.tasks].index((c.task_type, c.index))
    slots = np.zeros((c.num_workers, 4), np.int64)
    slots[me] = mine
    got = _allreduce(strategy, slots.ravel()).reshape(c.num_workers, 4)
    differ = [f"{t[0]} {t[1]}" for t, g in zip(c.tasks, got) if not np.array_equal(g, got[0])]
    if differ:
        why = ("start every worker with the same config and --set" if "config" in values else
               "the workers' weights diverged (different TensorFlow versions or CPUs?)")
        raise ClusterError(f"{what}: {', '.join(differ)} holds different {', '.join(values)} "
                           f"than {c.tasks[0][0]} {c.tasks[0][1]}; {why}")


# ---------------------------------------------------------------- trying it on one machine
def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports the OS reports free on `host` (bound to port 0 and released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_tf_configs(n: int) -> list[str]:
    """TF_CONFIG for each of `n` workers on 127.0.0.1 (worker 0 is the chief)."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [json.dumps({"cluster": {"worker": addrs}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


def launch_local(argv: list[str], n: int, timeout: Optional[float] = None) -> int:
    """Run `shifter-tf ARGV` as `n` workers on this machine; returns the first non-zero exit
    code (0 if all succeed). SIGINT/SIGTERM are passed on to every worker."""
    envs = [{**os.environ, "TF_CONFIG": cfg} for cfg in local_tf_configs(n)]
    cmd = [sys.executable, "-m", "shifter_tf.cli", *argv, "--set", "train.strategy=multi_worker"]
    procs = [subprocess.Popen(cmd, env=env) for env in envs]

    def forward(sig, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait(timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for s, h in old.items():
            signal.signal(s, h)
    return next((c for c in codes if c), 0)
