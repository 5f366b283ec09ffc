"""Reading annotation files for ``make-train-data``: JSON or JSONL documents, proposal files,
and the checks of one entry's fields, whose failures become one
:class:`~vlxseek_core.errors.InvalidRequestError` naming the file and the entry.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InvalidRequestError
from ..json_lines import parse_json_lines


def read_json_or_jsonl(path: str) -> Any:
    """A JSON document, or the list of values of a JSONL file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {path!r}: {exc}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # JSONL, or each line fails below
        pass
    return parse_json_lines(text, path, InvalidRequestError)


def load_proposals(path: str) -> Dict[str, np.ndarray]:
    """Proposals per image from a reference-format file.

    Returns:
        image name (as written, and its basename) → float32 ``[K, 4]`` xyxy pixel boxes.

    Raises:
        InvalidRequestError: unreadable file, an entry without ``image``/``bbox_list``, or a
            ``bbox_list`` that is not ``[K, 4]`` numbers.
    """
    data = read_json_or_jsonl(path)
    if isinstance(data, dict):
        data = [data]
    out: Dict[str, np.ndarray] = {}
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or "image" not in entry or "bbox_list" not in entry:
            raise InvalidRequestError(f"{path}: proposal entry {k} needs 'image' and 'bbox_list'")
        try:
            boxes = np.asarray(entry["bbox_list"], np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"{path}: proposal entry {k}: bbox_list is not a list of "
                                      f"numbers: {exc}") from None
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise InvalidRequestError(f"{path}: proposal entry {k}: bbox_list must be [K, 4] "
                                      f"xyxy boxes, got shape {list(boxes.shape)}")
        boxes = boxes.reshape(-1, 4)
        out[str(entry["image"])] = boxes
        out.setdefault(os.path.basename(str(entry["image"])), boxes)
    return out


@contextlib.contextmanager
def entry_errors(path: str, form: str, where: str):
    """Turn a malformed entry's KeyError, TypeError or ValueError into one
    :class:`InvalidRequestError` naming the file, the annotation ``form`` ("COCO") and the
    entry (``where``: "annotation 3")."""
    try:
        yield
    except KeyError as exc:
        raise InvalidRequestError(f"{path}: {form} {where} has no {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{path}: bad {form} {where}: {exc}") from None


def as_object(entry: Any) -> Dict[str, Any]:
    """``entry`` itself if it is a JSON object (dict); TypeError otherwise."""
    if not isinstance(entry, dict):
        raise TypeError(f"not a JSON object: {entry!r:.40}")
    return entry


def image_name(image: Any) -> str:
    """``image`` itself if it is a non-empty file name (str); ValueError otherwise."""
    if not isinstance(image, str) or not image:
        raise ValueError(f"the image must be a file name, got {image!r}")
    return image


def box4(values: Any) -> List[float]:
    """Four numbers as floats (pixels, in the annotation's own box format); ValueError or
    TypeError for anything else."""
    box = [float(v) for v in values]
    if len(box) != 4:
        raise ValueError(f"a box has 4 numbers, got {values!r}")
    return box


def entry_size(entry: Dict[str, Any]) -> Optional[Tuple[float, float]]:
    """An entry's ``(width, height)`` in pixels, or None without a ``width``; raises
    ValueError for a size that is not two positive finite numbers."""
    if "width" not in entry:
        return None
    size = tuple(entry[k] for k in ("width", "height"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
               for v in size):
        raise ValueError(f"width and height must be positive numbers, got {size}")
    return float(size[0]), float(size[1])
