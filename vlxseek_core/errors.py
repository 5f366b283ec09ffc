"""Error types. Every error a caller should handle derives from :class:`VLXSeekError`."""


class VLXSeekError(Exception):
    """Base class of all vlxseek errors."""


class InvalidImageError(VLXSeekError, ValueError):
    """The image cannot be used (empty, wrong shape/dtype, unsupported encoding, ...)."""


class InvalidRequestError(VLXSeekError, ValueError):
    """The query, task or boxes of a request are invalid."""


class CheckpointError(VLXSeekError, RuntimeError):
    """A checkpoint directory is missing, incomplete, corrupt or not safetensors."""
