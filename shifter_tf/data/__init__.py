"""Data, phase 1: in-memory sets (`sets`), loading by name (`loaders`), streamed folders and user
tf.data pipelines (`streams`). May import: config, errors, util."""
from shifter_tf.data.loaders import load_dataset
from shifter_tf.data.sets import Dataset, Normalization
from shifter_tf.data.streams import StreamData, image_folder

__all__ = ["Dataset", "Normalization", "StreamData", "image_folder", "load_dataset"]
