"""shifter-tf: DNNShifter for TensorFlow/Keras, targeting TFLite.

tfmot 0.8 only works with Keras 2, so the legacy Keras switch must be set before TensorFlow is
first imported anywhere in the process; importing this package does that.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
