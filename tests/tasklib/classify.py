"""Run inside .venv-tasklib (tflite-support 0.4.4, no TensorFlow): open .tflite files with the
Task Library's ImageClassifier (the C++ Android runs) and MetadataDisplayer; print JSON.

    python classify.py IMAGES.npy MODEL.tflite [MODEL.tflite ...]

IMAGES.npy: uint8 (N, H, W, 3) RGB images. For each model: the top-1 label index and score the
Task Library gives for every image (or the error it raises when it refuses the model), and the
metadata as tflite-support's MetadataDisplayer shows it (its JSON, packed files, labels.txt).
"""
import json
import sys

import numpy as np
from tflite_support import metadata
from tflite_support.task import core, processor, vision


def classify(path: str, images: np.ndarray) -> dict:
    try:
        options = vision.ImageClassifierOptions(
            base_options=core.BaseOptions(file_name=path, num_threads=1),
            classification_options=processor.ClassificationOptions(max_results=1))
        classifier = vision.ImageClassifier.create_from_options(options)
    except Exception as e:  # the Task Library refuses the model: say why
        return {"error": f"{type(e).__name__}: {e}"}
    top = []
    for img in images:
        result = classifier.classify(vision.TensorImage.create_from_array(img))
        best = result.classifications[0].categories[0]
        top.append([best.index, best.score, best.category_name])
    return {"top1": top}


def display(path: str) -> dict:
    shown = metadata.MetadataDisplayer.with_model_file(path)
    files = shown.get_packed_associated_file_list()
    return {"json": json.loads(shown.get_metadata_json()), "packed_files": files,
            "labels": (shown.get_associated_file_buffer("labels.txt").decode().splitlines()
                       if "labels.txt" in files else None)}


def main(argv) -> int:
    images = np.load(argv[1])
    out = {path: {**classify(path, images), "metadata": display(path)} for path in argv[2:]}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
