"""Bad input is one line on stderr naming the culprit, exit code 2, no traceback.

CLI cases run `python -m shifter_tf.cli` in a subprocess. Those that fail before TensorFlow loads
(config, --set, TF_CONFIG, image folder layout) run one process each and must not import it. The
user-model cases need TensorFlow, so they share one subprocess that calls `cli.main` per case.
TensorFlow's C++ start-up log lines (I0000 ..., absl) are not ours and are filtered out.
"""
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist5k_vgg.yaml"
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)")
TINY = ["--set", "train.epochs=1", "--set", "data.limit_train=64"]


def cli(args, cwd, env=None, timeout=300):
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "shifter_tf.cli", *map(str, args)], cwd=cwd,
                       env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
    lines = [l for l in r.stderr.splitlines() if l.strip() and not TF_LOG.match(l)]
    return r.returncode, lines, r.stderr, time.perf_counter() - t


def assert_one_line(rc, lines, raw, culprits):
    assert "Traceback" not in raw, raw[-3000:]
    assert rc == 2, raw[-3000:]
    assert len(lines) == 1, lines
    for c in culprits:
        assert c in lines[0], (c, lines[0])


# ------------------------------------------------------------------ before TensorFlow loads
def _image_tree(root: Path, kind: str) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    if kind == "class_folders_without_images":
        for c in ("cat", "dog"):
            (root / c).mkdir()
        (root / "cat" / "notes.txt").write_text("no images here")
    elif kind == "images_without_class_folders":
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / f"{i}.png")
    return root


PRE_TF = {   # id: (extra args, env, substrings the one line must hold)
    "set_without_equals": (["--set", "train.epochs"], {}, ["--set", "train.epochs"]),
    "set_malformed_value": (["--set", "train.milestones=[1,"], {}, ["train.milestones", "YAML"]),
    "set_into_non_mapping": (["--set", "name.sub=1"], {}, ["name.sub", "not a mapping"]),
    "unknown_key": (["--set", "train.epoch=2"], {}, ["train.epoch", "unknown key"]),
    "unknown_model": (["--set", "model.name=vgg99"], {}, ["model.name", "vgg99"]),
    "model_kwarg_misspelt": (["--set", "model.kwargs.widht=0.5"], {}, ["model.kwargs.widht"]),
    "resnet_kwarg_misspelt": (["--set", "model.name=resnet20", "--set", "model.kwargs.depth=3"],
                              {}, ["model.kwargs.depth", "resnet20"]),
    "resnet_old_width": (["--set", "model.name=resnet20", "--set", "model.kwargs.width=16"],
                         {}, ["model.kwargs.width", "base_filters: 16"]),
    "structure_unknown": (["--set", "lottery.structure=channels"], {},
                          ["lottery.structure", "groups"]),
    "model_kwarg_bad_value": (["--set", "model.kwargs.width=-1"], {}, ["model.kwargs.width"]),
    "fractions_sum_to_one": (["--set", "data.val_fraction=0.5", "--set", "data.test_fraction=0.5"],
                             {}, ["data.val_fraction", "no training data"]),
    "image_size_one_number": (["--set", "data.image_size=[32]"], {}, ["data.image_size"]),
    "custom_objects_without_unsafe": (["--set", "model.custom_objects=[my_pkg.layers:Scale]"], {},
                                      ["model.custom_objects", "model.unsafe"]),
    "custom_objects_malformed": (["--set", "model.unsafe=true",
                                  "--set", "model.custom_objects=[my_pkg.layers]"], {},
                                 ["model.custom_objects", "my_pkg.layers"]),
    "tf_config_not_json": (["--set", "train.strategy=multi_worker"], {"TF_CONFIG": "{cluster"},
                           ["TF_CONFIG", "JSON"]),
    "tf_config_bad_task": (["--set", "train.strategy=multi_worker"],
                           {"TF_CONFIG": '{"cluster": {}, "task": {"type": 1}}'},
                           ["TF_CONFIG", "task"]),
    "tf_config_missing": (["--set", "train.strategy=multi_worker"], {"TF_CONFIG": ""},
                          ["TF_CONFIG", "not set", "--workers"]),
    "tf_config_index_outside": (
        ["--set", "train.strategy=multi_worker"],
        {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
                      '"index": 2}}'}, ["TF_CONFIG", "task.index", "0..1"]),
    "tf_config_bad_address": (
        ["--set", "train.strategy=multi_worker"],
        {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", '
                      '"index": 0}}'}, ["TF_CONFIG", "cluster.worker[1]", "host:port"]),
    "tf_config_unknown_job": (
        ["--set", "train.strategy=multi_worker"],
        {"TF_CONFIG": '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}'},
        ["TF_CONFIG", "cluster.ps"]),
    "kerastuner_port_missing": (["--set", "train.strategy=default"],
                                {"KERASTUNER_ORACLE_IP": "127.0.0.1"},
                                ["KERASTUNER_ORACLE_PORT", "not set"]),
    "image_folder_empty": (["--set", "data.name=image_folder", "--set", "data.path={empty}"],
                           {}, ["empty", "no class sub-folders"]),
    "class_folders_without_images": (
        ["--set", "data.name=image_folder", "--set", "data.path={class_folders_without_images}"],
        {}, ["cat, dog", "hold no images"]),
    "images_without_class_folders": (
        ["--set", "data.name=image_folder", "--set", "data.path={images_without_class_folders}"],
        {}, ["3 images", "no class sub-folders"]),
}


@pytest.mark.parametrize("case", sorted(PRE_TF))
def test_cli_error_before_tensorflow(case, tmp_path):
    extra, env, culprits = PRE_TF[case]
    for kind in ("empty", "class_folders_without_images", "images_without_class_folders"):
        if "{" + kind + "}" in " ".join(extra):
            _image_tree(tmp_path / kind, kind)
    extra = [a.format(**{k: tmp_path / k for k in ("empty", "class_folders_without_images",
                                                   "images_without_class_folders")})
             for a in extra]
    command = "tune" if case.startswith("kerastuner") else "train"
    rc, lines, raw, seconds = cli([command, "--config", CONFIG, "--out", tmp_path / "run",
                                   *extra], cwd=tmp_path, env=env)
    assert_one_line(rc, lines, raw, culprits)
    assert not (tmp_path / "run").exists()            # nothing written
    assert "I0000" not in raw and seconds < 5         # TensorFlow never loaded (well under 2 s idle)


def test_config_errors_never_import_tensorflow(tmp_path):
    (tmp_path / "e").mkdir()
    code = ("import sys; from shifter_tf.cli import main; "
            f"rcs = [main(['train', '--config', {str(CONFIG)!r}, '--out', 'r', '--set', a]) "
            "for a in ('train.epoch=1', 'data.image_size=[3]', 'data.name=image_folder')]; "
            "print(rcs, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[2, 2, 2] False"


# ------------------------------------------------------------------ after TensorFlow loads
@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    """Model files a user might hand us: broken, custom, the wrong shape."""
    import tf_keras as keras

    d = tmp_path_factory.mktemp("models")
    (d / "issue13_layers.py").write_text(
        "import tf_keras as keras\n\n"
        "class Scale(keras.layers.Layer):\n"
        "    def call(self, x):\n        return x * 2.0\n\n"
        "class Net(keras.Model):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n        self.fc = keras.layers.Dense(10)\n"
        "    def call(self, x):\n        return self.fc(keras.layers.Flatten()(x))\n")
    sys.path.insert(0, str(d))
    try:
        import issue13_layers as ul
    finally:
        sys.path.remove(str(d))

    def model(body, shape=(28, 28, 1)):
        i = keras.Input(shape, name="image")
        return keras.Model(i, body(keras.layers.Flatten()(i)))

    custom = model(lambda x: keras.layers.Dense(10, name="fc")(ul.Scale(name="scale")(x)))
    custom.save(d / "custom.keras")
    custom.save(d / "custom.h5")
    model(lambda x: keras.layers.Dense(10)(keras.layers.Lambda(lambda t: t * 2.0)(x))).save(
        d / "lambda.keras")
    model(lambda x: keras.layers.Dense(10)(x), shape=(32, 32, 3)).save(d / "rgb32.keras")
    model(lambda x: keras.layers.Dense(5, name="head")(x)).save(d / "five.keras")
    net = ul.Net()
    net(np.zeros((1, 28, 28, 1), np.float32))
    net.save(d / "subclassed.keras")
    good = (d / "custom.keras").read_bytes()
    (d / "truncated.keras").write_bytes(good[: len(good) // 2])
    (d / "empty.keras").write_bytes(b"")
    (d / "random.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    model(lambda x: keras.layers.Dense(10)(x)).save(d / "plain.h5")
    h5 = (d / "plain.h5").read_bytes()
    (d / "truncated.h5").write_bytes(h5[: len(h5) // 2])
    import keras as keras3   # Keras 3: a layer tf_keras has no equivalent for, a wrong input
    i = keras3.Input((28, 28, 1))
    x = keras3.layers.Activation("hard_silu", name="hswish")(keras3.layers.Flatten()(i))
    keras3.Model(i, keras3.layers.Dense(10)(x)).save(d / "k3_hswish.keras")
    i = keras3.Input((32, 32, 3), name="image")
    keras3.Model(i, keras3.layers.Dense(10)(keras3.layers.Flatten()(i))).save(d / "k3_rgb.h5")
    return d


MODEL_CASES = {   # id: (--set values, substrings the one line must hold)
    "truncated_keras": (["model.path={d}/truncated.keras"], ["truncated.keras", "not a readable"]),
    "empty_keras": (["model.path={d}/empty.keras"], ["empty.keras", "empty"]),
    "random_h5": (["model.path={d}/random.h5"], ["random.h5", "not a readable"]),
    "truncated_h5": (["model.path={d}/truncated.h5"], ["truncated.h5", "not a readable"]),
    "missing_file": (["model.path={d}/absent.keras"], ["absent.keras", "not found"]),
    "custom_layer": (["model.path={d}/custom.keras"],
                     ["custom.keras", "'scale'", "'Scale'", "model.custom_objects"]),
    "subclassed_model": (["model.path={d}/subclassed.keras"],
                         ["subclassed.keras", "'Net'", "subclassed model"]),
    "custom_layer_h5": (["model.path={d}/custom.h5"],
                        ["custom.h5", "'scale'", "'Scale'", "model.custom_objects"]),
    "lambda_layer": (["model.path={d}/lambda.keras"], ["lambda.keras", "model.unsafe: true"]),
    "custom_object_missing_name": (["model.path={d}/custom.keras", "model.unsafe=true",
                                    "model.custom_objects=[issue13_layers:Scael]"],
                                   ["issue13_layers:Scael", "no 'Scael'"]),
    "custom_object_missing_module": (["model.path={d}/custom.keras", "model.unsafe=true",
                                      "model.custom_objects=[no_such_pkg.layers:Scale]"],
                                     ["no_such_pkg.layers:Scale", "cannot import"]),
    "input_shape_mismatch": (["model.path={d}/rgb32.keras"],
                             ["rgb32.keras", "(32, 32, 3)", "(28, 28, 1)"]),
    "keras3_unconvertible": (["model.path={d}/k3_hswish.keras"],
                             ["k3_hswish.keras", "'hswish'", "hard_silu"]),
    "keras3_input_shape_mismatch": (["model.path={d}/k3_rgb.h5"],
                                    ["k3_rgb.h5", "(32, 32, 3)", "(28, 28, 1)"]),
    "outputs_not_num_classes": (["model.path={d}/five.keras"],
                                ["five.keras", "'head'", "(?, 5)", "10 classes"]),
}

_RUNNER = """
import contextlib, io, json, sys, traceback
from shifter_tf.cli import main
out = {}
for case, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException:
        rc, err = -1, io.StringIO(err.getvalue() + traceback.format_exc())
    out[case] = [rc, err.getvalue()]
print("RESULTS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def model_results(bad_models, tmp_path_factory):
    """Every model case through `cli.main` in one subprocess (TensorFlow loads once)."""
    work = tmp_path_factory.mktemp("cli")
    argv = {}
    for case, (sets, _) in MODEL_CASES.items():
        args = ["train", "--config", str(CONFIG), "--out", str(work / case), *TINY]
        for s in sets:
            args += ["--set", s.format(d=bad_models)]
        argv[case] = args
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bad_models), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argv)], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULTS ")]
    assert line, r.stderr[-3000:]
    return work, json.loads(line[-1][len("RESULTS "):])


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_cli_user_model_errors(case, model_results):
    work, results = model_results
    rc, err = results[case]
    lines = [l for l in err.splitlines() if l.strip() and not TF_LOG.match(l)]
    assert_one_line(rc, lines, err, MODEL_CASES[case][1])
    assert not (work / case).exists()                 # refused before anything was written


def test_cli_corrupt_image_is_named(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / c / f"{i:02d}.png")
    (root / "dog" / "17.png").write_bytes(b"\x89PNG but not really")
    rc, lines, raw, _ = cli(["train", "--config", CONFIG, "--out", tmp_path / "run", *TINY,
                             "--set", "data.name=image_folder", "--set", f"data.path={root}",
                             "--set", "data.image_size=[8,8]"], cwd=tmp_path)
    assert_one_line(rc, lines, raw, [str(root / "dog" / "17.png"), "cannot decode"])


# ------------------------------------------------------------------ Python API
def test_custom_objects_load_with_unsafe(bad_models):
    from shifter_tf.config.schema import ModelConfig
    from shifter_tf.models import model_for

    sys.path.insert(0, str(bad_models))
    try:
        m = model_for(ModelConfig(path=str(bad_models / "custom.keras"), unsafe=True,
                                  custom_objects=["issue13_layers:Scale"]), (28, 28, 1), 10)
    finally:
        sys.path.remove(str(bad_models))
    assert [l.__class__.__name__ for l in m.layers].count("Scale") == 1


@pytest.mark.parametrize("labels, culprit", [
    ([0, 1, 10], "label(s) outside [0, 10)"), ([-1, 0, 1], "first -1"), ([], "training split")])
def test_labels_out_of_range_or_no_training_data(labels, culprit):
    from shifter_tf.data.sets import DataError, Dataset, Normalization

    x = np.zeros((len(labels), 4, 4, 1), np.float32)
    ok = np.zeros(2, np.int64)
    with pytest.raises(DataError, match=re.escape(culprit)):
        Dataset("toy", x, np.asarray(labels), x[:2], ok, x[:2], ok, [str(i) for i in range(10)],
                Normalization())


def test_vgg_width_multiplier_scales_every_conv():
    from shifter_tf.models import build_model

    def filters(m):
        return [l.filters for l in m.layers if l.__class__.__name__ == "Conv2D"]
    assert filters(build_model("vgg_small", (28, 28, 1), 10)) == [16, 16, 32, 32, 64, 64]
    assert filters(build_model("vgg_small", (28, 28, 1), 10, width=0.5)) == [8, 8, 16, 16, 32, 32]
    assert filters(build_model("vgg11", (32, 32, 3), 10, width=0.001)) == [1] * 8


def test_model_kwargs_table_matches_the_builders():
    from shifter_tf.config.schema import ConfigError
    from shifter_tf.config.rules import MODEL_KWARGS
    from shifter_tf.models import MODELS, build_model, builder_kwargs

    assert {n: builder_kwargs(b) for n, b in MODELS.items()} == MODEL_KWARGS
    with pytest.raises(ConfigError, match=r"model\.kwargs\.widht"):
        build_model("resnet20", (16, 16, 3), 10, widht=2)


def test_export_set_overrides_the_run_config_only_for_export(tmp_path):
    from shifter_tf.config.schema import load_config, save_config
    from shifter_tf.pipeline import run_config

    save_config(load_config(CONFIG), tmp_path / "config.yaml")
    assert run_config(tmp_path, {"export.latency_runs": 3}).export.latency_runs == 3
    rc, lines, raw, _ = cli(["export", tmp_path, "--set", "data.name=cifar10"], cwd=tmp_path)
    assert_one_line(rc, lines, raw, ["--set data.name", "export.*"])
    rc, lines, raw, _ = cli(["export", tmp_path, "--set", "export.precisions=[fp99]"],
                            cwd=tmp_path)
    assert_one_line(rc, lines, raw, ["config.yaml", "export.precisions", "fp99"])
    rc, lines, raw, _ = cli(["prune", tmp_path / "nothing"], cwd=tmp_path)
    assert_one_line(rc, lines, raw, ["nothing", "not a run folder"])
    assert "I0000" not in raw


def test_written_files_get_the_variant_files_mode(tmp_path):
    from shifter_tf.config.schema import Config, save_config
    from shifter_tf.util.io import atomic_dir, atomic_write_json

    old = os.umask(0o022)
    try:
        save_config(Config(), tmp_path / "config.yaml")
        atomic_write_json(tmp_path / "lottery.json", {"levels": []})

        def fill(tmp):
            (tmp / "a.tflite").write_bytes(b"x")
            atomic_write_json(tmp / "manifest.json", {})
        atomic_dir(tmp_path / "portfolio", fill)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in
             [tmp_path / "config.yaml", tmp_path / "lottery.json",
              *(tmp_path / "portfolio").iterdir()]}
    assert set(modes.values()) == {0o644}, modes
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["name"] == "experiment"


def test_cli_second_train_into_a_busy_run_is_one_line(tmp_path):
    """A run folder another process is training: the second `train` says so in one line and
    writes no level (the lock is held here, the CLI runs in its own process)."""
    from shifter_tf.util.io import run_lock
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        rc, lines, raw, _ = cli(["train", "--config", CONFIG, "--out", run, *TINY], ROOT)
    assert_one_line(rc, lines, raw, [str(run), "another process", "--out"])
    assert not (run / "levels").exists()
