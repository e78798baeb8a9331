"""Every error a user can cause and fix, in one leaf module: it imports nothing of shifter_tf, so
any phase (and the CLI, before TensorFlow loads) can raise or catch these. The CLI prints them as
one line instead of a traceback."""
from edge_runtime.schema import ManifestError  # the device side's own leaf


class ConfigError(ValueError):
    """A config file or key that cannot be used; the message names both."""


class ClusterError(RuntimeError):
    """A peer that never joined, died or differs; the message says which and what to do."""


class DataError(ValueError):
    """A data set that cannot be loaded, with what to do about it."""


class ModelError(ValueError):
    """A model name, file or layer that cannot be used, with the reason."""


class ConversionError(ModelError):
    """A model that cannot be converted between Keras 3 and tf_keras; names the layer and why."""


class CompileError(ValueError):
    """A compiled optimizer, loss or metric that has no tf_keras equivalent."""


class TrainingError(RuntimeError):
    """Training that diverged or cannot run; the message says which run and why."""


class SurgeryError(ValueError):
    """The model cannot be rewritten (or the result failed verification); the message says why."""


class ExportError(RuntimeError):
    """A conversion that failed; names the model and the precision."""


class PaiError(RuntimeError):
    """Pruning at initialisation that cannot be done; says which model/layer and why."""


class StorageError(RuntimeError):
    """A write the file system refused (full, over quota, read-only, no permission): names the
    folder, what was being written and, when known, the bytes needed against the bytes free.
    Writes are atomic, so the previous copy of what was being replaced is still complete;
    `oserror` is the refusal itself (its `errno`)."""

    def __init__(self, message: str, oserror: "OSError | None" = None):
        super().__init__(message)
        self.oserror = oserror


class RunBusyError(RuntimeError):
    """A run folder another process is writing (its `.lock` is held): two writers would corrupt
    it, so the second is refused; names the folder."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ClusterError, DataError, ModelError, CompileError, TrainingError, SurgeryError,
    ExportError, ManifestError, PaiError, StorageError, RunBusyError, FileNotFoundError,
    FileExistsError)
