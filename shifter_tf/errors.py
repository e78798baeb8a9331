"""The errors a user can cause and fix; the CLI prints these as one line instead of a traceback."""
from edge_runtime.manifest import ManifestError
from shifter_tf.config import ConfigError
from shifter_tf.data import DataError
from shifter_tf.export import ExportError
from shifter_tf.models import ModelError
from shifter_tf.pai.scores import PaiError
from shifter_tf.surgery import SurgeryError
from shifter_tf.train import TrainingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, ModelError, TrainingError, SurgeryError, ExportError, ManifestError,
    PaiError, FileNotFoundError, FileExistsError)
