"""Error types. Every error a caller should handle derives from :class:`VLXSeekError`."""


class VLXSeekError(Exception):
    """Base class of all vlxseek errors."""


class InvalidImageError(VLXSeekError, ValueError):
    """The image cannot be used (empty, wrong shape/dtype, unsupported encoding, ...)."""


class InvalidRequestError(VLXSeekError, ValueError):
    """An argument of a call is invalid: the query, task, boxes, region indices or an option
    (see :mod:`vlxseek_core.validation`); the message starts with the argument's name."""


class CheckpointError(VLXSeekError, RuntimeError):
    """A checkpoint directory is missing, incomplete, corrupt or not safetensors, or one of
    its files holds a bad value (the message names the file and key)."""


class StateDictMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model it is loaded into (strict loading).

    Attributes (key names as the checkpoint file spells them):
        missing: keys the model needs that the file lacks.
        unexpected: keys of the file that the model has no place for.
        mismatched: ``(key, shape in the file, shape the model needs)`` tuples.
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
