"""The errors a user can cause and fix; the CLI prints these as one line instead of a traceback."""
from shifter_tf.config import ConfigError
from shifter_tf.data import DataError
from shifter_tf.models import ModelError
from shifter_tf.train import TrainingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, ModelError, TrainingError, FileNotFoundError, FileExistsError)
