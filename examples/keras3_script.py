"""A plain Keras 3 training script that hands its model and tf.data pipeline to shifter-tf.

It writes a small image folder (three classes of coloured noise), streams it with Keras 3's own
`image_dataset_from_directory`, builds and compiles a Keras 3 model that rescales its own input,
trains a portfolio of sparse levels, prunes them, exports TFLite variants, and carries on in
Keras 3 with the pruned model.

    .venv/bin/python examples/keras3_script.py --out runs/example            # ~2 minutes
    .venv/bin/python examples/keras3_script.py --out /tmp/ex --tiny          # the CI setting
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import shifter_tf        # first: tfmot needs tf_keras, which this sets up; `keras` stays Keras 3
import keras


def write_images(root: Path, per_class: int, size: int = 40) -> None:
    """PNG images whose class shows in the dominant colour, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("red", "green", "blue")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(90, 40, (size, size, 3))
            img[..., k] += 70
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")


def build_model(num_classes: int) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="few images, 1 epoch, 2 levels (CI)")
    args = p.parse_args(argv)
    per_class, epochs, levels = (60, 3, 2) if args.tiny else (300, 6, 5)
    keras.utils.set_random_seed(0)

    images = args.out / "images"
    if not images.exists():
        write_images(images, per_class)
    split = dict(validation_split=0.25, seed=0, image_size=(32, 32), batch_size=32)
    train = keras.utils.image_dataset_from_directory(images, subset="training", **split)
    val = keras.utils.image_dataset_from_directory(images, subset="validation", **split)
    labels = train.class_names

    model = build_model(len(labels))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    portfolio = shifter_tf.train_portfolio(
        model, train, validation_data=val, out=args.out / "run", levels=levels,
        prune_fraction=0.4, epochs=epochs, labels=labels,
        callbacks=[keras.callbacks.CSVLogger(str(args.out / "training_log.csv"))],
        resume=(args.out / "run" / "lottery.json").exists(), verbose=0)
    print(portfolio.table())
    print(shifter_tf.prune(portfolio, keras3=True))
    manifest = shifter_tf.export_portfolio(portfolio, precisions=["fp32", "int8"],
                                           representative_data=train.take(4))

    # Back in Keras 3: the most pruned level, as a Keras 3 model, evaluated on the same stream.
    pruned = keras.saving.load_model(
        args.out / "run" / "pruned" / f"level_{levels:02d}" / "model_keras3.keras")
    pruned.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    _, accuracy = pruned.evaluate(val, verbose=0)
    summary = {"levels": [r.test_accuracy for r in portfolio.levels],
               "pruned_keras3_accuracy": float(accuracy),
               "pruned_params": int(pruned.count_params()),
               "dense_params": int(model.count_params()),
               "variants": len(manifest["variants"]),
               "normalization_source": manifest["task"]["normalization_source"]}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
