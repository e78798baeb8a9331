"""The Python API: a training script's own model, compile() and data (numpy or tf.data)
through train_portfolio -> prune -> export_portfolio."""
import json

import numpy as np
import pytest

import shifter_tf


def small_model(keras, rescale: bool = False):
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inp) if rescale else inp
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    return keras.Model(inp, keras.layers.Dense(10)(h))


def test_numpy_arrays_compiled_model_and_callbacks(tmp_path, mnist_tiny):
    import tf_keras as keras

    model = small_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    epochs_seen = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs_seen.append(logs))
    train, val = mnist_tiny.normalized("train"), mnist_tiny.normalized("val")
    pf = shifter_tf.train_portfolio(model, train, validation_data=val, out=tmp_path / "run",
                                    levels=2, prune_fraction=0.5, epochs=1, batch_size=64,
                                    callbacks=[cb], verbose=0, progress=False,
                                    labels=[f"digit{i}" for i in range(10)])
    assert [r.level for r in pf.levels] == [0, 1, 2]
    assert [round(r.density, 2) for r in pf.levels] == [1.0, 0.5, 0.25]
    assert len(epochs_seen) == 3 and "val_loss" in epochs_seen[0]   # our callback, every level
    assert pf.levels[0].test_accuracy > 0.5                      # it learned (Adam, 1 epoch)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "Adam" in saved and "compiled" in saved               # the user's compile() recorded
    assert "| 2 |" in pf.table()

    table = shifter_tf.prune(pf)
    assert "| 2 |" in table
    pruned = pf.model(2, "pruned")
    x = val[0][:64]
    np.testing.assert_allclose(pruned.predict(x, verbose=0), pf.model(2).predict(x, verbose=0),
                               atol=1e-4)
    k3 = pf.model(2, "pruned", keras3=True)
    from shifter_tf.models.keras3 import is_keras3
    assert is_keras3(k3)
    np.testing.assert_allclose(np.asarray(k3(x[:8])), pruned.predict(x[:8], verbose=0),
                               atol=1e-5)
    manifest = shifter_tf.export_portfolio(pf, precisions=["fp32", "int8"],
                                           representative_data=train[0][:16], progress=False)
    task = manifest["task"]
    assert task["normalization"] is None and task["normalization_source"] == "caller"
    assert task["labels"][3] == "digit3"
    kinds = {(v["kind"], v["precision"]) for v in manifest["variants"]}
    assert ("pruned", "int8") in kinds and ("dense", "fp32") in kinds
    # the CLI phases refuse a run whose data came from Python, in one line
    from shifter_tf.data.sets import DataError
    with pytest.raises(DataError, match="train_portfolio"):
        shifter_tf.prune(tmp_path / "run")


def test_tf_data_pipeline_and_a_model_that_rescales_itself(tmp_path, mnist_tiny):
    import tensorflow as tf
    import tf_keras as keras

    x, y = mnist_tiny.split("train")          # raw 0..255 pixels: the model rescales them
    xv, yv = mnist_tiny.split("val")
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).batch(32)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(128)
    pf = shifter_tf.train_portfolio(small_model(keras, rescale=True), train,
                                    validation_data=val, out=tmp_path / "run", levels=1,
                                    epochs=1, verbose=0, progress=False,
                                    config={"train": {"lr": 0.05}})
    assert pf.levels[-1].density == pytest.approx(0.8, abs=0.01)     # config's default 0.2
    assert json.loads((tmp_path / "run" / "normalization.json").read_text())["source"] == "model"
    assert pf.levels[0].test_accuracy > 0.3
    shifter_tf.prune(pf)
    manifest = shifter_tf.export_portfolio(pf, progress=False)
    assert manifest["task"]["normalization_source"] == "model"
    # the device feeds raw pixels: the exported dense model agrees with Keras on them
    from shifter_tf.export.convert import convert
    from ai_edge_litert.interpreter import Interpreter
    dense = pf.model(0)
    interp = Interpreter(model_content=convert(dense, "fp32"))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    interp.set_tensor(i, xv[:1].astype(np.float32))
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(o), dense.predict(xv[:1], verbose=0), atol=1e-3)


def test_bad_inputs_are_one_line(tmp_path, mnist_tiny):
    import tf_keras as keras

    from shifter_tf.data.sets import DataError
    train = mnist_tiny.normalized("train")
    with pytest.raises(DataError, match="validation_data: required"):
        shifter_tf.train_portfolio(small_model(keras), train, out=tmp_path / "a")
    with pytest.raises(DataError, match="labels: 3 names"):
        shifter_tf.train_portfolio(small_model(keras), train, validation_data=train,
                                   labels=["a", "b", "c"], out=tmp_path / "b")
    with pytest.raises(DataError, match="100 inputs but 99 labels"):
        shifter_tf.train_portfolio(small_model(keras), (train[0][:100], train[1][:99]),
                                   validation_data=train, out=tmp_path / "c")


def test_a_finished_run_is_not_overwritten(tmp_path, mnist_tiny):
    import tf_keras as keras

    train, val = mnist_tiny.normalized("train"), mnist_tiny.normalized("val")
    kw = dict(validation_data=val, out=tmp_path / "run", levels=1, epochs=1, verbose=0,
              progress=False)
    shifter_tf.train_portfolio(small_model(keras), (train[0][:256], train[1][:256]), **kw)
    before = (tmp_path / "run" / "input_model.keras").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        shifter_tf.train_portfolio(small_model(keras), (train[0][:256], train[1][:256]), **kw)
    assert (tmp_path / "run" / "input_model.keras").read_bytes() == before
    again = shifter_tf.train_portfolio(small_model(keras), (train[0][:256], train[1][:256]),
                                       resume=True, **kw)
    assert [r.level for r in again.levels] == [0, 1]     # nothing left to train: same levels
