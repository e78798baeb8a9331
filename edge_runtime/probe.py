"""Isolated checks of ``.tflite`` files: a file is loaded and invoked in a child process first.

Why: tflite-runtime 2.14 builds the interpreter from a flatbuffer without verifying it, and a
malformed file can segfault in ``Interpreter.__init__`` (or later in ``invoke``). No ``try`` catches
a SIGSEGV, and neither installed runtime exposes a flatbuffer verifier to Python (ai-edge-litert
verifies internally; tflite-runtime does not), so the only safe test is to let a child process
load the file, allocate its tensors and run one inference on zeros. A crash, an exception or a
hang (timeout) in the child is the file's verdict; the parent only ever opens files whose exact
sha256 passed.

Verdicts are remembered in a small JSON cache keyed by backend (name and version) and sha256, so
each file is probed once per device and runtime: ``$EDGE_RUNTIME_CACHE/probe.json``, else
``$XDG_CACHE_HOME/edge_runtime/probe.json``, else ``~/.cache/edge_runtime/probe.json``. A process
with no home (no ``HOME`` and no passwd entry: a systemd service with a dynamic user, a minimal
container) uses ``<temp dir>/edge_runtime-<uid>/probe.json`` (a folder of its own, mode 0700;
one that another user owns or can write is not trusted), else no file: verdicts are kept for
this process only. Either way with a one-line warning. Writes are atomic (temp file + rename)
and merge with what other processes wrote meanwhile; an unwritable cache only costs a re-probe
next start. Only definite verdicts are cached: a pass, an exception or a crash by signal; a
timeout, a kill (out of memory?), a missing Edge TPU delegate or a child that could not start
are not. The cache is trusted like the code: whoever can write it
can mark a file good (a signed portfolio still only loads files that match the signed manifest).

Many files are probed by one child (one interpreter import); when it dies on a file, the parent
records that file's verdict and starts a new child for the files after it.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from edge_runtime.files import atomic_write_bytes
from edge_runtime.schema import PathLike

log = logging.getLogger("edge_runtime")
CACHE_ENV = "EDGE_RUNTIME_CACHE"
CACHE_NAME = "probe.json"
CACHE_VERSION = 1
MARK = "@@edge-probe "
_PKG_ROOT = str(Path(__file__).resolve().parents[1])
#: stages whose verdict is a property of the file (cacheable)
DEFINITE = ("ok", "read", "load", "invoke", "crash")


@dataclass(frozen=True)
class Verdict:
    """What a child process saw when it loaded one file and ran one inference on zeros."""

    ok: bool
    stage: str                      # ok | read | load | invoke | crash | timeout | killed | ...
    reason: Optional[str] = None    # one line, when not ok
    input: Optional[Dict[str, Any]] = None    # {"shape", "dtype", "quantized"}
    output: Optional[Dict[str, Any]] = None   # {"shape", "dtype", "quantized", "finite"}
    cached: bool = False

    @property
    def definite(self) -> bool:
        return self.stage in DEFINITE

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d


@dataclass(frozen=True)
class ProbeItem:
    path: Path
    sha256: str
    edgetpu: bool = False


# ------------------------------------------------------------------------------------- cache
def _home() -> Optional[Path]:
    """The user's home, or ``None`` when there is none (``Path.home()`` raises then)."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):   # no HOME and no passwd entry for this uid
        return None
    return home if home.is_absolute() else None   # HOME="" gives "."


def _private_temp_folder() -> Optional[Path]:
    """``<temp dir>/edge_runtime-<uid>``, created 0700; ``None`` if it is not ours alone."""
    try:
        folder = Path(tempfile.gettempdir()) / f"edge_runtime-{os.getuid()}"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None   # a symlink, or a folder someone else made or can write: never trusted
    return folder


_warned_no_home = False


def default_cache_path() -> Optional[Path]:
    """Where verdicts are remembered (see the module docstring); ``None``: memory only."""
    global _warned_no_home
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / CACHE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "edge_runtime" / CACHE_NAME
    home = _home()
    if home is not None:
        return home / ".cache" / "edge_runtime" / CACHE_NAME
    folder = _private_temp_folder() if hasattr(os, "getuid") else None
    if not _warned_no_home:
        _warned_no_home = True
        log.warning("no home directory (HOME unset, no passwd entry for uid %s): file-check "
                    "verdicts %s; set %s to choose a folder",
                    getattr(os, "getuid", lambda: "?")(),
                    f"cached in {folder}" if folder else "kept in memory only", CACHE_ENV)
    return None if folder is None else folder / CACHE_NAME


def backend_key() -> str:
    from edge_runtime.interpreter import get_backend
    b = get_backend()
    return f"{b.name} {b.version}"


class ProbeCache:
    """sha256 -> verdict, per backend; ``path=None`` keeps verdicts in memory only."""

    def __init__(self, path: Optional[PathLike], backend: str):
        self.path = None if path is None else Path(path)
        self.backend = backend
        self._mem: Dict[str, Verdict] = {}
        if self.path is not None:
            for sha, d in self._read().get(backend, {}).items():
                try:
                    self._mem[sha] = Verdict(**d, cached=True)
                except TypeError:
                    continue   # an entry from another version of this module

    def _read(self) -> Dict[str, Dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable probe cache %s: %s", self.path, e)
            return {}
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            return {}
        verdicts = doc.get("verdicts")
        return verdicts if isinstance(verdicts, dict) else {}

    def get(self, sha256: str) -> Optional[Verdict]:
        return self._mem.get(sha256)

    def put(self, verdicts: Dict[str, Verdict]) -> None:
        keep = {sha: v for sha, v in verdicts.items() if v.definite}
        self._mem.update(keep)
        if not keep or self.path is None:
            return
        try:
            allv = self._read()       # merge with what other processes wrote meanwhile
            mine = allv.setdefault(self.backend, {})
            mine.update({sha: v.to_dict() for sha, v in keep.items()})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"version": CACHE_VERSION, "verdicts": allv}, indent=1)
            atomic_write_bytes(self.path, data.encode("utf-8") + b"\n")
        except OSError as e:
            log.warning("cannot write probe cache %s (%s); files will be probed again next "
                        "start", self.path, e.strerror or e)


def open_cache(cache: Union[PathLike, None, bool] = None) -> ProbeCache:
    """``None``/``True``: the default file; a path: that file; ``False``: memory only."""
    if cache is False:
        return ProbeCache(None, backend_key())
    path = default_cache_path() if cache is None or cache is True else Path(cache)
    return ProbeCache(path, backend_key())  # path None: no home and no private temp folder


# ------------------------------------------------------------------------------------- parent
def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _run_child(items: Sequence[ProbeItem], num_threads: int,
               timeout_s: float) -> "tuple[Dict[int, Verdict], Optional[int], int, str]":
    """One child over ``items``: finished verdicts, the index it ended on, rc, stderr."""
    from edge_runtime.interpreter import get_backend

    env = dict(os.environ, EDGE_RUNTIME_BACKEND=get_backend().name,
               PYTHONPATH=os.pathsep.join([_PKG_ROOT] + [p for p in [
                   os.environ.get("PYTHONPATH")] if p]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    job = json.dumps({"threads": num_threads, "items": [
        {"path": str(i.path), "sha256": i.sha256, "edgetpu": i.edgetpu} for i in items]})
    cmd = [sys.executable, "-c", "import sys; from edge_runtime.probe import child_main; "
                                 "sys.exit(child_main())"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
    except OSError as e:   # no fork/exec here (out of memory, no interpreter binary)
        return {}, None, 1, f"{cmd[0]}: {e.strerror or e}"
    try:
        out, err = proc.communicate(job, timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        timed_out = True
    done: Dict[int, Verdict] = {}
    current: Optional[int] = None
    for line in out.splitlines():
        if not line.startswith(MARK):
            continue
        msg = json.loads(line[len(MARK):])
        if "start" in msg:
            current = int(msg["start"])
        else:
            i = int(msg.pop("done"))
            done[i] = Verdict(**msg)
            current = None
    rc = -9999 if timed_out else proc.returncode
    return done, current, rc, err


def probe_files(items: Sequence[ProbeItem], num_threads: int = 1, timeout_s: float = 30.0,
                isolate_each: bool = False) -> List[Verdict]:
    """Verdicts for ``items``, each file loaded and invoked once in a child process.

    ``timeout_s`` is per file (plus the child's start-up); ``isolate_each`` starts one child per
    file instead of one per batch.
    """
    verdicts: List[Optional[Verdict]] = [None] * len(items)
    pending = list(range(len(items)))
    while pending:
        batch = pending[:1] if isolate_each else pending
        done, current, rc, err = _run_child([items[i] for i in batch], num_threads,
                                            timeout_s * (len(batch) + 1))
        for j, v in done.items():
            verdicts[batch[j]] = v
        if current is not None:
            i = batch[current]
            if rc == -9999:
                verdicts[i] = Verdict(False, "timeout", f"{items[i].path}: no answer within "
                                                        f"{timeout_s:.0f} s while loading or "
                                                        "invoking it (child process killed)")
            elif rc == -signal.SIGKILL:
                verdicts[i] = Verdict(False, "killed", f"{items[i].path}: the checking process "
                                                       "was killed (out of memory?)")
            elif rc < 0:
                verdicts[i] = Verdict(False, "crash", f"{items[i].path} crashed the TFLite "
                                                      f"interpreter ({_signal_name(rc)}) while "
                                                      "loading or invoking it: corrupt model")
            else:
                tail = " ".join(err.strip().splitlines()[-1:])[:300]
                verdicts[i] = Verdict(False, "crash", f"{items[i].path}: the checking process "
                                                      f"exited with code {rc}: {tail}")
        elif not done:   # no file reached: the child could not even start
            tail = " ".join(err.strip().splitlines()[-1:])[:300]
            why = _signal_name(rc) if rc < 0 else f"exit code {rc}"
            for i in batch:
                verdicts[i] = Verdict(False, "spawn", f"the file-checking process failed to "
                                                      f"start ({why}: {tail})")
        pending = [i for i in pending if verdicts[i] is None]
    return verdicts  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- child
def _emit(msg: Dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(msg) + "\n")
    sys.stdout.flush()


def _describe(spec: Any) -> Dict[str, Any]:
    return {"shape": list(spec.shape), "dtype": str(spec.dtype), "quantized": spec.quantized}


def _probe_one(item: Dict[str, Any], threads: int) -> Dict[str, Any]:
    import hashlib

    import numpy as np

    from edge_runtime.interpreter import DelegateUnavailable, Runner, open_interpreter

    path = item["path"]
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return {"ok": False, "stage": "read", "reason": f"cannot read {path}: {e.strerror or e}"}
    if hashlib.sha256(data).hexdigest() != item["sha256"]:
        return {"ok": False, "stage": "changed", "reason": f"{path} changed while it was checked"}
    try:
        interp = open_interpreter(data, threads, edgetpu=bool(item.get("edgetpu")))
        runner = Runner(interp, len(data), 0.0)
    except DelegateUnavailable as e:
        return {"ok": False, "stage": "delegate", "reason": str(e)}
    except Exception as e:  # the runtime's own words for a file it refuses
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return {"ok": False, "stage": "load", "reason": f"{path} failed to load: {first}"}
    io = {"input": _describe(runner.input), "output": _describe(runner.output)}
    try:
        y, _ = runner.run(np.zeros((1,) + tuple(runner.example_shape), np.float32))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return {"ok": False, "stage": "invoke", "reason": f"{path} failed to run: {first}", **io}
    io["output"]["finite"] = bool(np.isfinite(y).all())
    io["output"]["shape"] = [1] + list(y.shape[1:])
    return {"ok": True, "stage": "ok", **io}


def child_main() -> int:
    """Entry point of the checking process: a JSON job on stdin, one verdict line per file."""
    job = json.loads(sys.stdin.read())
    threads = int(job.get("threads", 1))
    for i, item in enumerate(job["items"]):
        _emit({"start": i})
        _emit({"done": i, **_probe_one(item, threads)})
    return 0


def iter_unknown(cache: ProbeCache, items: Iterable[ProbeItem]) -> List[ProbeItem]:
    """The items whose sha256 has no verdict in ``cache`` yet (each sha256 once)."""
    seen, out = set(), []
    for it in items:
        if cache.get(it.sha256) is None and it.sha256 not in seen:
            seen.add(it.sha256)
            out.append(it)
    return out


def check_files(items: Sequence[ProbeItem], cache: ProbeCache,
                timeout_s: float = 30.0) -> "tuple[Dict[str, Verdict], int]":
    """Verdict per sha256 for ``items``: from the cache, else probed (and cached) now.

    Returns the verdicts and how many files had to be probed.
    """
    unknown = iter_unknown(cache, items)
    fresh: Dict[str, Verdict] = {}
    if unknown:
        fresh = {it.sha256: v for it, v in zip(unknown, probe_files(unknown,
                                                                     timeout_s=timeout_s))}
        cache.put(fresh)
    out = {}
    for it in items:
        v = fresh.get(it.sha256) or cache.get(it.sha256)
        if v is not None:
            out[it.sha256] = v
    return out, len(unknown)
