"""Image files: the one place that reads them, so that every way a file can fail to be a usable
image (missing, a folder, not an image, truncated, or a decompression bomb whose header claims
more pixels than Pillow's limit) becomes one :class:`~vlxseek_core.errors.InvalidImageError`
with the path, never Pillow's own exception types.

Pillow's limit stands (``PIL.Image.MAX_IMAGE_PIXELS``: 89,478,485 pixels warn, twice that is
refused): the model sees at most 2048 px a side (:mod:`.preprocessing`), and a 30,000 px PNG
of a few hundred bytes would otherwise ask for 2.7 GB when decoded.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

from .errors import InvalidImageError


@contextlib.contextmanager
def _opened(path: str) -> Iterator:
    """The open PIL image; whatever goes wrong inside the block (open, header, decoding)
    becomes one InvalidImageError naming ``path``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            yield img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # SyntaxError: some Pillow plugins report a malformed header with it
        raise InvalidImageError(f"cannot read image {path!r}: {exc}") from None


def read_rgb(path: str):
    """The whole image file decoded, as a PIL RGB image (no EXIF rotation, as the reference).

    Args:
        path: the image file (any format Pillow reads).

    Returns:
        ``PIL.Image.Image`` in mode ``RGB``, ``width × height`` pixels as stored.

    Raises:
        InvalidImageError: missing or unreadable file, not an image, truncated pixel data, or
            more pixels than Pillow's decompression-bomb limit.
    """
    with _opened(path) as img:
        return img.convert("RGB")


def image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` in pixels from the file's header; the pixels are not decoded.

    Raises:
        InvalidImageError: as :func:`read_rgb`, except that truncated pixel data goes unseen.
    """
    with _opened(path) as img:
        return img.size
