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
