"""Faults a new user meets: a full or read-only disk, a recipe changed on resume, data with one
class, a dense model that never learned. Each is one line naming the culprit, exit code 2 from
the CLI (run in a subprocess), no traceback, and nothing lost: the sha256 of every file that was
there before is unchanged.

The disk-full cases use a small tmpfs where one can be mounted (root) and an injected ENOSPC /
EROFS otherwise.
"""
import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist5k_vgg.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_errors  # noqa: E402
from test_errors import assert_one_line  # noqa: E402


def cli(args, cwd, env=None, timeout=600):
    """`test_errors.cli`, without tqdm's progress lines (a level that did finish shows one)."""
    rc, lines, raw, seconds = test_errors.cli(args, cwd, env, timeout)
    return rc, [l for l in lines if "%|" not in l], raw, seconds


def hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def debris(folder: Path) -> list:
    return [str(p) for p in Path(folder).rglob(".*") if ".tmp" in p.name or ".new" in p.name]


@contextlib.contextmanager
def small_fs(path: Path, size_kb: int, read_only: bool = False):
    """A tmpfs of `size_kb` at `path` (root only), remounted read-only if asked; None if no
    mount is possible here (the caller injects the error instead)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
            capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_ro(path: Path) -> bool:
    return subprocess.run(["mount", "-o", "remount,ro", str(path)],
                          capture_output=True).returncode == 0


# A subprocess that runs `cli.main` with a write refused by an injected errno (when no tmpfs
# can be mounted): every write through Python's `open` for writing, or `free_bytes` faked.
_INJECT = """
import builtins, errno, io, json, os, sys
mode, argv = sys.argv[1], json.loads(sys.argv[2])
if mode == "nospace":
    import shifter_tf.util.io as sio
    sio.free_bytes = lambda folder: 4096
else:
    real = io.open
    def refusing(file, m="r", *a, **k):
        if any(c in m for c in "wax+") and "levels" in str(file):
            raise OSError(getattr(errno, mode), os.strerror(getattr(errno, mode)), str(file))
        return real(file, m, *a, **k)
    builtins.open = io.open = refusing
from shifter_tf.cli import main
sys.exit(main(argv))
"""


def cli_injected(mode: str, args, cwd):
    from test_errors import TF_LOG
    r = subprocess.run([sys.executable, "-c", _INJECT, mode, json.dumps([str(a) for a in args])],
                       cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [l for l in r.stderr.splitlines()
             if l.strip() and not TF_LOG.match(l) and "%|" not in l]
    return r.returncode, lines, r.stderr, 0.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_tiny):
    """A finished tiny run: levels 0 and 1, pruned, exported (fp32), and its config file."""
    from shifter_tf import pipeline
    from shifter_tf.train import lottery

    run = tmp_path_factory.mktemp("trained") / "run"
    cfg = tiny_config(lottery={"levels": 1}, portfolio={"max_accuracy_drop": None,
                                                        "stop_at_chance": True})
    lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False)
    pipeline.prune_run(run, data=mnist_tiny, progress=False)
    pipeline.export_run(run, data=mnist_tiny, progress=False)
    return run


def copy_run(trained: Path, dst: Path, skip=()) -> Path:
    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns(*skip))
    return dst


# ------------------------------------------------------------------ disk full, read-only
def test_export_on_a_full_disk_names_the_folder_and_the_bytes(trained, tmp_path):
    """The issue's case: a run on a 3 MB tmpfs, an export that does not fit. Refused before
    converting, with the bytes the portfolio needs against the bytes free."""
    with small_fs(tmp_path / "fs", 3072) as fs:
        run = copy_run(trained, (fs or tmp_path) / "run")
        before = hashes(run)
        args = ["export", run, "--set", "export.precisions=[fp32,fp16,int8,int8_dynamic]",
                "--set", "export.kinds=[dense,sparse,pruned]"]
        rc, lines, raw, _ = (cli(args, cwd=tmp_path) if fs else
                             cli_injected("nospace", args, cwd=tmp_path))
        assert_one_line(rc, lines, raw, [str(run / "portfolio"), "needs at least", "bytes",
                                         "free"])
        assert hashes(run) == before and not debris(run)


def test_a_write_refused_mid_export_keeps_the_previous_portfolio(trained, tmp_path, mnist_tiny,
                                                                 monkeypatch):
    """ENOSPC while a variant file is written (the estimate fitted, the files did not): the
    half-built portfolio is removed, the old one is untouched, the line names the file."""
    from shifter_tf import pipeline
    from shifter_tf.errors import StorageError

    run = copy_run(trained, tmp_path / "run")
    before = hashes(run)
    real = Path.write_bytes

    def full(self, data):
        if self.suffix == ".tflite" and "fp16" in self.name:
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError) as e:
        pipeline.export_run(run, data=mnist_tiny, progress=False,
                            overrides={"export.precisions": ["fp32", "fp16"]})
    msg = str(e.value)
    assert msg.startswith(f"{run / 'portfolio'}: no space left on the device while writing "
                          "the portfolio") and "variants/L00-dense-fp16.tflite" in msg, msg
    assert "needs at least" in msg and "bytes are free" in msg and "\n" not in msg
    assert hashes(run) == before and not debris(run)


def test_training_on_a_full_disk_keeps_the_finished_levels(trained, tmp_path):
    """`train --resume` whose level 1 checkpoint does not fit: level 0 and everything else stay
    as they were, no half-written level is left, one line names the level folder."""
    with small_fs(tmp_path / "fs", 1536) as fs:
        run = copy_run(trained, (fs or tmp_path) / "run",
                       skip=("level_01", "pruned", "portfolio"))
        for key in ("lottery.json",):    # as a run killed after level 0 left it
            doc = json.loads((run / key).read_text())
            (run / key).write_text(json.dumps(doc[:1]))
        if fs:   # leave room for the config and lottery.json, not for a level
            free = shutil.disk_usage(fs).free
            (fs / "filler").write_bytes(b"\0" * max(free - 64 * 1024, 0))
        before = hashes(run)
        args = ["train", "--config", run / "config.yaml", "--out", run, "--resume"]
        rc, lines, raw, _ = (cli(args, cwd=tmp_path) if fs else
                             cli_injected("ENOSPC", args, cwd=tmp_path))
        assert_one_line(rc, lines, raw, [str(run / "levels" / "level_01"), "no space left",
                                         "level 1"])
        after = hashes(run)
        assert {k: after[k] for k in before if "level_00" in k or k.endswith(".npz")} == \
               {k: before[k] for k in before if "level_00" in k or k.endswith(".npz")}
        assert not (run / "levels" / "level_01").exists() and not debris(run)


def test_training_into_a_read_only_folder_is_one_line(tmp_path):
    with small_fs(tmp_path / "ro", 256) as fs:
        if fs is None or not remount_ro(fs):
            pytest.skip("no read-only mount here (the injected refusal is covered above)")
        rc, lines, raw, _ = cli(["train", "--config", CONFIG, "--out", fs / "run",
                                 "--set", "data.limit_train=64"], cwd=tmp_path)
        assert_one_line(rc, lines, raw, [str(fs), "read-only file system", "run"])


def test_prune_report_and_sign_map_refused_writes(trained, tmp_path, mnist_tiny, monkeypatch):
    """The other write paths: a pruned level, the report, a signature, a key."""
    import tf_keras as keras

    from shifter_tf import pipeline
    from shifter_tf.errors import StorageError
    from shifter_tf.export import report, signing

    run = copy_run(trained, tmp_path / "run")
    before = hashes(run)
    real_save = keras.Model.save

    def no_space(self, path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(keras.Model, "save", no_space)
    with pytest.raises(StorageError, match=r"pruned/level_01: no space left on the device "
                                           r"while writing the pruned model of level 1"):
        pipeline.prune_run(run, data=mnist_tiny, progress=False)
    monkeypatch.setattr(keras.Model, "save", real_save)

    import edge_runtime.files as files
    real_write = files.atomic_write_bytes

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    monkeypatch.setattr("shifter_tf.util.io.atomic_write_bytes", read_only)
    with pytest.raises(StorageError, match=r"read-only file system while writing report\.md"):
        report.write_report(run)
    priv, _, _ = signing.generate_keypair(tmp_path / "keys" / "k")
    with pytest.raises(StorageError, match=r"portfolio: read-only file system while writing "
                                           r"manifest\.json\.sig"):
        signing.sign_portfolio(run / "portfolio", priv)
    monkeypatch.setattr("shifter_tf.util.io.atomic_write_bytes", real_write)
    after = hashes(run)
    assert all(after.get(k) == v for k, v in before.items()) and not debris(run)

    real_fdopen = os.fdopen

    def short_write(fd, *a, **k):
        fh = real_fdopen(fd, *a, **k)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                fh.write(data[:10])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return Full()
    monkeypatch.setattr("shifter_tf.export.signing.os.fdopen", short_write)
    with pytest.raises(StorageError, match=r"keys2: no space left on the device while writing k"):
        signing.generate_keypair(tmp_path / "keys2" / "k")
    assert not (tmp_path / "keys2" / "k").exists()    # no half-written private key


# ------------------------------------------------------------------ resume with a new recipe
def test_resume_with_a_changed_recipe_is_refused_then_recorded(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    cfg = tmp_path / "cfg.yaml"
    shutil.copy(run / "config.yaml", cfg)
    before = hashes(run)
    rc, lines, raw, seconds = cli(["train", "--config", cfg, "--out", run, "--resume",
                                   "--set", "train.lr=0.5", "--set", "train.verbose=2"],
                                  cwd=tmp_path)
    assert_one_line(rc, lines, raw, [str(run / "config.yaml"), "train.lr (0.05 -> 0.5)",
                                     "--allow-changed-recipe"])
    assert "train.verbose" not in lines[0]           # how it is shown changes nothing
    assert hashes(run) == before and "I0000" not in raw and seconds < 10   # before TensorFlow
    # more levels are not another recipe
    from shifter_tf.config.schema import load_config
    from shifter_tf.train.resume import check_resume
    more = load_config(cfg, {"lottery.levels": 5, "train.strategy": "mirrored"})
    assert check_resume(more, run) == {}

    r = subprocess.run([sys.executable, "-m", "shifter_tf.cli", "train", "--config", str(cfg),
                        "--out", str(run), "--resume", "--set", "train.lr=0.5",
                        "--allow-changed-recipe"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    log = json.loads((run / "recipe_changes.json").read_text())
    assert log[-1]["changes"] == {"train.lr": {"was": 0.05, "now": 0.5}}
    assert log[-1]["allowed_by"] == "--allow-changed-recipe" and log[-1]["levels"] == []
    after = hashes(run)
    assert {k: after[k] for k in before if k.startswith(("levels", "pruned", "portfolio"))} == \
           {k: before[k] for k in before if k.startswith(("levels", "pruned", "portfolio"))}


def test_resume_of_an_unfinished_run_records_the_levels_it_changes(trained, tmp_path,
                                                                   mnist_tiny):
    from shifter_tf.errors import ConfigError
    from shifter_tf.train import lottery

    run = copy_run(trained, tmp_path / "run", skip=("level_01", "pruned", "portfolio"))
    before = hashes(run)
    other = tiny_config(lottery={"levels": 1}, train={"lr": 0.04}, seed=7,
                        portfolio={"max_accuracy_drop": None, "stop_at_chance": True})
    with pytest.raises(ConfigError, match=r"seed \(1 -> 7\), train\.lr \(0\.05 -> 0\.04\)"):
        lottery.run_lottery(other, run, data=mnist_tiny, progress=False, resume=True)
    assert hashes(run) == before
    results = lottery.run_lottery(other, run, data=mnist_tiny, progress=False, resume=True,
                                  allow_changed_recipe=True)
    assert [r.level for r in results] == [0, 1]
    (entry,) = json.loads((run / "recipe_changes.json").read_text())
    assert entry["from_level"] == 1 and entry["levels"] == [1]
    assert set(entry["changes"]) == {"seed", "train.lr"}
    assert all(hashes(run)[k] == v for k, v in before.items() if "level_00" in k)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.04


def test_api_resume_compares_the_recipe(tmp_path, mnist_tiny):
    import tf_keras as keras

    import shifter_tf
    from shifter_tf.errors import ConfigError

    def model():
        keras.utils.set_random_seed(0)
        i = keras.Input((28, 28, 1))
        return keras.Model(i, keras.layers.Dense(10)(keras.layers.Flatten()(i)))
    train, val = mnist_tiny.normalized("train"), mnist_tiny.normalized("val")
    kw = dict(validation_data=val, out=tmp_path / "run", levels=0, verbose=0, progress=False)
    shifter_tf.train_portfolio(model(), train, epochs=1, **kw)
    before = hashes(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"train\.epochs \(1 -> 2\)"):
        shifter_tf.train_portfolio(model(), train, epochs=2, resume=True, **kw)
    assert hashes(tmp_path / "run") == before
    pf = shifter_tf.train_portfolio(model(), train, epochs=2, resume=True,
                                    allow_changed_recipe=True, **kw)
    assert [r.level for r in pf.levels] == [0]
    assert "train.epochs" in json.loads((tmp_path / "run" / "recipe_changes.json").read_text()
                                        )[0]["changes"]


# ------------------------------------------------------------------ degenerate data
def _folder(root: Path, counts: dict) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("counts, culprits", [
    ({"cat": 12}, ["only class 'cat'", "at least two classes"]),
    ({"cat": 12, "dog": 2}, ["'dog' has 2", "at least 6", "data.val_fraction 0.1"]),
])
def test_degenerate_image_folder_is_one_line_before_training(tmp_path, counts, culprits):
    root = _folder(tmp_path / "imgs", counts)
    rc, lines, raw, seconds = cli(["train", "--config", CONFIG, "--out", tmp_path / "run",
                                   "--set", "data.name=image_folder", "--set",
                                   f"data.path={root}", "--set", "data.image_size=[8,8]"],
                                  cwd=tmp_path)
    assert_one_line(rc, lines, raw, [str(root), *culprits])
    assert not (tmp_path / "run").exists() and "I0000" not in raw    # before TensorFlow


def test_degenerate_arrays_are_refused():
    from shifter_tf.data.sets import DataError, Dataset, Normalization, check_classes

    x = np.zeros((6, 4, 4, 1), np.float32)
    one = np.zeros(6, np.int64)
    with pytest.raises(DataError, match="y_train holds only class '0'"):
        Dataset("toy", x, one, x, one, x, one, ["0", "1"], Normalization())
    with pytest.raises(DataError, match="1 class name"):
        Dataset("toy", x, one, x, one, x, one, ["0"], Normalization())
    with pytest.raises(DataError, match="'b' has 1 example"):
        check_classes("toy", np.array([0] * 10 + [1]), ["a", "b"], [0.1, 0.2],
                      ["data.val_fraction", "data.test_fraction"])


# ------------------------------------------------------------------ a dense model at chance
def test_a_dense_level_at_chance_stops_the_run(tmp_path):
    """64 training images, one short epoch: level 0 predicts one class (0.100 on 10 classes)
    with the BN statistics of that epoch (recalibrated, the same 2 steps already lift it)."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(data={"limit_train": 64}, lottery={"levels": 1},
                                              train={"bn_recalibration": 0},
                                              portfolio={"stop_at_chance": True}).to_dict()))
    rc, lines, raw, _ = cli(["train", "--config", cfg, "--out", tmp_path / "run"], cwd=tmp_path)
    assert_one_line(rc, lines, raw, ["level 0 (dense)", "within noise of chance",
                                     "train.lr 0.05", "nothing was saved"])
    assert not (tmp_path / "run" / "levels").exists()


def test_min_dense_accuracy_and_the_floor_at_export(trained, tmp_path, mnist_tiny):
    from shifter_tf import pipeline
    from shifter_tf.errors import ExportError
    from shifter_tf.train import lottery

    run = copy_run(trained, tmp_path / "run")
    dense = lottery.load_results(run)[0].test_accuracy
    cfg = pipeline.run_config(run, {"portfolio.min_dense_accuracy": round(dense + 0.01, 4)})
    with pytest.raises(ExportError, match="below portfolio.min_dense_accuracy"):
        pipeline.candidates(run, cfg, mnist_tiny)
    # a level at chance is never deployed while the floor is on ...
    metrics = run / "levels" / "level_01" / "metrics.json"
    doc = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**doc, "test_accuracy": 0.11}))
    on = pipeline.run_config(run, {"portfolio.max_accuracy_drop": 0.9})
    assert {c.level for c in pipeline.candidates(run, on, mnist_tiny)} == {0}
    off = pipeline.run_config(run)             # max_accuracy_drop: null deploys every level
    assert {c.level for c in pipeline.candidates(run, off, mnist_tiny)} == {0, 1}
    # ... and a dense level at chance (a run trained before this check) exports nothing
    metrics = run / "levels" / "level_00" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "test_accuracy": 0.1}))
    before = hashes(run)
    rc, lines, raw, _ = cli(["export", run], cwd=tmp_path)
    assert_one_line(rc, lines, raw, [str(run), "level 0 (dense)", "chance", "train.lr",
                                     "nothing was exported"])
    assert hashes(run) == before


def test_run_lock_in_a_refusing_folder_is_a_storage_error(tmp_path, monkeypatch):
    """The lock file is the run's first write: a read-only run folder is named like any other
    refused write, not a bare OSError."""
    import shifter_tf.util.io as sio
    from shifter_tf.errors import StorageError

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    monkeypatch.setattr(sio, "open", read_only, raising=False)
    with pytest.raises(StorageError, match=rf"{tmp_path}: read-only file system while writing "
                                           r"\.lock"):
        with sio.run_lock(tmp_path):
            pass
