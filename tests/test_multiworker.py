"""MultiWorkerMirroredStrategy with real worker processes on 127.0.0.1.

Every worker is `python -m shifter_tf.cli` in its own process with its own TF_CONFIG (free ports),
all with the same --out; every process has a hard timeout and is killed in a `finally`. The model
is a tiny user CNN (one BatchNormalization with momentum 0.9, so its moving statistics settle in
one short level) to keep the whole file to a few minutes.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)")
CONFIG = {
    "name": "tiny_mw", "seed": 1,
    "data": {"name": "mnist5k", "limit_train": 1024},
    "train": {"lr": 0.05, "epochs": 2, "batch_size": 32, "verbose": 0, "peer_timeout": 60},
    "lottery": {"levels": 2, "prune_fraction": 0.5, "rewind_iterations": 2,
                "schedule": "oneshot"},
}


def _model(path: Path) -> None:
    import shifter_tf  # noqa: F401
    import tf_keras as keras

    L = keras.layers
    i = L.Input((28, 28, 1))
    x = L.MaxPooling2D()(L.Conv2D(8, 3, activation="relu")(i))
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, use_bias=False)(x)))
    x = L.Flatten()(L.MaxPooling2D()(x))
    keras.Model(i, L.Dense(10)(x)).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The config (model file, YAML) and the single-process run every cluster is compared to."""
    root = tmp_path_factory.mktemp("mw")
    _model(root / "tiny.keras")
    cfg = {**CONFIG, "model": {"path": str(root / "tiny.keras")}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    ref = root / "single"
    r = subprocess.run([sys.executable, "-m", "shifter_tf.cli", "train", "--config",
                        root / "tiny.yaml", "--out", ref], env=_env(root), cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads((ref / "lottery.json").read_text())


def _env(root: Path, **extra) -> dict:
    tmp = root / "worker_tmp"      # non-chief workers' temporary folders go here
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), **extra}


def _tf_configs(n: int) -> list[str]:
    from shifter_tf.distributed.cluster import local_tf_configs
    return local_tf_configs(n)


def _start(root, tf_config, out, *args, log="w"):
    cmd = [sys.executable, "-m", "shifter_tf.cli", "train", "--config", root / "tiny.yaml",
           "--out", out, "--set", "train.strategy=multi_worker", *args]
    idx = json.loads(tf_config)["task"]["index"]
    err = open(root / f"{log}{idx}.err", "w")
    p = subprocess.Popen(list(map(str, cmd)), env=_env(root, TF_CONFIG=tf_config), cwd=root,
                         stdout=subprocess.DEVNULL, stderr=err)
    p.log = root / f"{log}{idx}.err"
    return p


def _lines(p) -> list[str]:
    """Our stderr lines (TensorFlow's C++ log lines and their continuations left out)."""
    text = p.log.read_text()
    return [l for l in text.splitlines()
            if l.strip() and not TF_LOG.match(l) and l.startswith("shifter-tf")]


def _wait_all(procs, timeout):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _levels(out: Path) -> list[dict]:
    return json.loads((out / "lottery.json").read_text())


def test_two_workers_write_one_run_equal_to_one_process(setup):
    root, single = setup
    out = root / "two"
    procs = [_start(root, c, out, log="two") for c in _tf_configs(2)]
    codes = _wait_all(procs, 600)
    assert codes == [0, 0], [p.log.read_text()[-2000:] for p in procs]
    levels = _levels(out)
    assert [l["level"] for l in levels] == [0, 1, 2]
    for l in range(3):
        d = out / "levels" / f"level_{l:02d}"
        assert sorted(f.name for f in d.iterdir()) == ["masks.npz", "metrics.json",
                                                       "model.keras"]
    names = sorted(f.name for f in out.iterdir())        # what one process writes, no more
    assert names == sorted(f.name for f in (root / "single").iterdir())
    assert {"config.yaml", "levels", "lottery.json", "rewind.npz"} <= set(names)
    assert list((root / "worker_tmp").iterdir()) == []     # worker 1's copy was deleted
    for mine, ref in zip(levels, single):
        assert mine["density"] == ref["density"]            # same global allocation
        assert abs(mine["test_accuracy"] - ref["test_accuracy"]) <= 0.02, (mine, ref)
        assert mine["test_accuracy"] > 0.8


def test_killed_worker_fails_in_one_line_and_the_cluster_resumes(setup):
    root, _ = setup
    out = root / "killed"
    slow = ["--set", "train.peer_timeout=40"]
    procs = [_start(root, c, out, *slow, log="kill") for c in _tf_configs(2)]
    try:
        deadline = time.monotonic() + 300
        while not (out / "levels" / "level_00" / "metrics.json").exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, \
                procs[0].log.read_text()[-2000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)           # worker 1 dies inside level 1
        t = time.monotonic()
        rc = procs[0].wait(timeout=120)
        waited = time.monotonic() - t
    finally:
        _wait_all(procs, 1)
    assert rc != 0 and waited < 40 + 15, (rc, waited)
    lines = _lines(procs[0])
    assert len(lines) == 1 and "lost the cluster" in lines[0] and "--resume" in lines[0], lines
    assert "Traceback" not in procs[0].log.read_text()
    assert [l["level"] for l in _levels(out)] == [0]
    first = (out / "levels" / "level_00" / "metrics.json").read_text()

    # the restarted cluster, through the local launcher: `train --workers 2 --resume`
    r = subprocess.run([sys.executable, "-m", "shifter_tf.cli", "train", "--config",
                        str(root / "tiny.yaml"), "--out", str(out), *slow, "--resume",
                        "--workers", "2"], env=_env(root), cwd=root, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("| 2 | 0.2500 |") == 2            # both workers' tables
    assert [l["level"] for l in _levels(out)] == [0, 1, 2]
    assert (out / "levels" / "level_00" / "metrics.json").read_text() == first   # not redone


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_peer_never_started_and_sigterm(setup):
    root, _ = setup
    configs = _tf_configs(2)
    p = _start(root, configs[0], root / "alone", "--set", "train.peer_timeout=10", log="alone")
    t = time.monotonic()
    rc = _wait_all([p], 120)[0]
    assert rc != 0 and time.monotonic() - t < 10 + 40
    peer = json.loads(configs[0])["cluster"]["worker"][1]
    lines = _lines(p)
    assert len(lines) == 1 and "did not form" in lines[0] and peer in lines[0], lines
    assert not (root / "alone").exists()

    # waiting for its peer (as long as train.peer_timeout), a worker still stops on SIGTERM
    p = _start(root, configs[1], root / "alone2", log="term")
    port = int(json.loads(configs[1])["cluster"]["worker"][1].rpartition(":")[2])
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.2)
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        t = time.monotonic()
        rc = p.wait(timeout=20)
    finally:
        _wait_all([p], 1)
    assert rc != 0 and time.monotonic() - t < 5
    assert any("stopped by SIGTERM" in l for l in _lines(p)), p.log.read_text()[-2000:]


def test_distributed_tuner_splits_trials_and_writes_one_best(setup):
    """keras-tuner's chief oracle plus a worker (KERASTUNER_*): both run trials, one best.yaml."""
    root, _ = setup
    cfg = yaml.safe_load((root / "tiny.yaml").read_text())
    cfg["train"]["epochs"] = 1
    cfg["tune"] = {"algorithm": "random", "max_trials": 2, "target_density": 0.5,
                   "space": {"train.lr": {"values": [0.03, 0.05]}}}
    (root / "tune.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "tuned"
    (port,) = __import__("shifter_tf.distributed.cluster", fromlist=["x"]).free_ports(1)
    procs = []
    try:
        for tid in ("chief", "tuner1"):
            env = _env(root, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port),
                       KERASTUNER_TUNER_ID=tid)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "shifter_tf.cli", "tune", "--config",
                 str(root / "tune.yaml"), "--out", str(out)], env=env, cwd=root,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        _wait_all(procs, 1)
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    ran = [re.findall(r"runs trial (\d+)", o) for o, _ in outs]
    assert sorted(ran[0] + ran[1]) == ["0", "1"] and ran[0] and ran[1], ran   # split
    assert "best config written to" in outs[0][0] and "the chief" in outs[1][0]
    rows = json.loads((out / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert sorted(r["train.lr"] for r in rows) == [0.03, 0.05]
    best = yaml.safe_load((out / "best.yaml").read_text())
    top = max(rows, key=lambda r: r["sparse_val_accuracy"])
    assert best["train"]["lr"] == top["train.lr"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1"]


def test_workers_with_different_configs_stop_in_one_line(setup):
    root, _ = setup
    c0, c1 = _tf_configs(2)
    procs = [_start(root, c0, root / "differ", log="differ"),
             _start(root, c1, root / "differ", "--set", "train.lr=0.07", log="differ")]
    assert all(rc != 0 for rc in _wait_all(procs, 300))
    for p in procs:
        lines = _lines(p)
        assert len(lines) == 1 and "worker 1 holds different config" in lines[0], lines
    assert not (root / "differ" / "levels").exists()


SHARD_SCRIPT = """
import hashlib, json, sys
from shifter_tf.distributed import cluster
strategy = cluster.strategy(60)
from shifter_tf.config.schema import DataConfig
from shifter_tf.data.loaders import load_dataset
data = load_dataset(DataConfig(limit_train=256), 1)
seen = []
ds = data.tf_dataset("train", 32, training=True, seed=1)   # what train.fit gives Keras
for x, y in strategy.experimental_distribute_dataset(ds):
    for v in strategy.experimental_local_results(x):
        seen += [hashlib.sha1(img.tobytes()).hexdigest() for img in v.numpy()]
every = [hashlib.sha1(img.tobytes()).hexdigest() for img in data.normalized("train")[0]]
print("SEEN", json.dumps({"seen": seen, "all": every}))
"""


def test_training_data_are_sharded_across_workers(setup):
    root, _ = setup
    procs = [subprocess.Popen([sys.executable, "-c", SHARD_SCRIPT], cwd=root,
                              env=_env(root, TF_CONFIG=c), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for c in _tf_configs(2)]
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        _wait_all(procs, 1)
    got = [json.loads(next(l for l in o.splitlines() if l.startswith("SEEN"))[5:]) for o in outs]
    a, b = (set(g["seen"]) for g in got)
    assert a and b and not a & b                         # each example on one worker only
    assert a | b == set(got[0]["all"])                   # together: the whole training split
    assert abs(len(a) - len(b)) <= 32
