"""Stopping a multi-worker process promptly, whatever TensorFlow is doing.

TensorFlow holds the GIL while it blocks in C++ (its start-up waits for every peer), so neither a
Python thread nor a Python signal handler runs then; and its coordination service replaces the
SIGTERM handler with a preemption notice that does not stop the process. So:
- `start` launches a sentinel process. Python's C-level handler writes every SIGTERM/SIGINT to
  the wakeup fd, which the sentinel reads: it prints one line, deletes the worker's temporary
  folders and kills the worker. It also enforces a deadline armed with `tell(arm=seconds)`.
- `rendezvous` waits for the peers in Python, before TensorFlow starts, so a peer that never
  comes is one line after the timeout instead of a hang.
- `abandon` is the way out once the cluster is lost: one line, clean up, os._exit (a normal exit
  would wait in TensorFlow's shutdown barrier for the dead peer).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_STATE: dict[str, Any] = {"fd": None, "who": "shifter-tf", "tmp": []}


def who() -> str:
    """`shifter-tf (worker 1 of 2)`: the prefix of this worker's lines."""
    return _STATE["who"]


def _cleanup() -> None:
    for d in _STATE["tmp"]:
        shutil.rmtree(d, ignore_errors=True)
    _STATE["tmp"] = []


def add_tmp(path: Path) -> None:
    """Delete `path` when this worker exits, however it exits (the sentinel does it if the worker
    is killed)."""
    if not _STATE["tmp"]:
        atexit.register(_cleanup)
    _STATE["tmp"].append(path)
    tell(tmp=[str(path)])


def abandon(message: str, code: int = 1) -> None:
    """Print one line, delete this worker's temporary folders and exit now."""
    print(message, file=sys.stderr, flush=True)
    _cleanup()
    os._exit(code)


# A separate process watches this one: TensorFlow holds the GIL while it blocks in C++ (the
# leader waiting at start-up for a peer that never comes), so neither a Python thread nor a Python
# signal handler would run. Python's C-level handler still writes each signal to the wakeup fd,
# which the sentinel reads; commands (JSON lines) arm a deadline or name the temporary folder.
_SENTINEL = r"""
import json, os, select, shutil, signal, socket, sys, time
parent, cmd, sig = (int(a) for a in sys.argv[1:4])
for s in (signal.SIGTERM, signal.SIGINT):    # a group signal (Ctrl-C, timeout) is the worker's
    signal.signal(s, signal.SIG_IGN)
deadline, job, tmp, buf = None, {}, [], b""
def probe(peers):
    gone = []
    for name, addr in peers:
        host, _, port = addr.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            gone.append(f"{name} at {addr}")
    return gone
def stop(line):
    sys.stderr.write(line + "\n"); sys.stderr.flush()
    for d in tmp:
        shutil.rmtree(d, ignore_errors=True)
    try:
        os.kill(parent, signal.SIGKILL)
    finally:
        os._exit(0)
while True:
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready = select.select([cmd, sig], [], [], wait)[0]
    if not ready:
        gone = probe(job.get("peers", []))
        stop(job["message"].replace("{gone}", "no answer from " + ", ".join(gone) if gone
                                    else "a peer is not answering"))
    if sig in ready:
        for b in os.read(sig, 64):
            if b in (signal.SIGTERM, signal.SIGINT):
                stop(job.get("who", "shifter-tf") + f": stopped by {signal.Signals(b).name}; "
                     "finished levels are kept (restart every worker with --resume)")
    if cmd in ready:
        data = os.read(cmd, 65536)
        if not data:                       # the worker exited (or was killed)
            for d in tmp:
                shutil.rmtree(d, ignore_errors=True)
            os._exit(0)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "arm" in msg:
                deadline = time.monotonic() + msg["arm"] if msg["arm"] is not None else None
            tmp += msg.get("tmp", [])
            job.update({k: v for k, v in msg.items() if k in ("message", "peers", "who")})
"""


def tell(**msg: Any) -> None:
    """Send a command to the sentinel: arm=seconds|None, message, peers, who, tmp."""
    fd = _STATE["fd"]
    if fd is not None:
        os.write(fd, (json.dumps(msg) + "\n").encode())


def start(name: str) -> None:
    """Start the sentinel: from now on SIGTERM/SIGINT stop this worker at once with one line
    prefixed `name`, even while TensorFlow holds the GIL."""
    _STATE["who"] = name
    if _STATE["fd"] is not None or threading.current_thread() is not threading.main_thread():
        return
    cmd_r, cmd_w = os.pipe()
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_w, False)
    subprocess.Popen([sys.executable, "-c", _SENTINEL, str(os.getpid()), str(cmd_r), str(sig_r)],
                     pass_fds=(cmd_r, sig_r), stdin=subprocess.DEVNULL)
    os.close(cmd_r)
    os.close(sig_r)
    _STATE["fd"] = cmd_w
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)     # a Python handler so the wakeup fd is written
    signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
    tell(who=name)


def reclaim_signals() -> None:
    """Take SIGTERM/SIGINT back: TensorFlow's coordination service installs its own SIGTERM
    handler (a preemption notice that does not stop the process)."""
    if _STATE["fd"] is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)


def unreachable(peers: list[list[str]]) -> list[str]:
    """`name at host:port` of the [name, host:port] peers that accept no TCP connection now."""
    out = []
    for name, addr in peers:
        host, _, port = addr.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            out.append(f"{name} at {addr}")
    return out


def rendezvous(name: str, me: str, peers: list[list[str]], timeout: float) -> None:
    """Wait, in Python (so signals work), until every peer's port accepts connections.

    Each worker listens on its own cluster port meanwhile (the kernel completes the handshake;
    nothing is accepted), so all wait for all; then the listener closes and TensorFlow binds
    the port. TensorFlow's own start-up would block, holding the GIL, for a missing peer.
    """
    from shifter_tf.errors import ClusterError

    port = int(me.rpartition(":")[2])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(("", port))
    except OSError as e:
        srv.close()
        raise ClusterError(f"{name}: cannot listen on port {port} of {me} ({e.strerror}); "
                           "choose a free port in TF_CONFIG") from None
    srv.listen(64)
    deadline = time.monotonic() + timeout
    try:
        while True:
            gone = unreachable(peers)
            if not gone:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{name}: the cluster did not form within {timeout:.0f} s "
                                   f"(train.peer_timeout): no answer from {', '.join(gone)}; "
                                   "start every worker with the same TF_CONFIG cluster")
            time.sleep(0.5)
    finally:
        srv.close()
