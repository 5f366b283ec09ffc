"""Argument checks of the public :class:`~vlxseek_core.pipeline.VLXSeek` entry points.

Every entry point (``from_pretrained``, ``query``, ``query_many``, ``encode``, ``answer``,
``propose``, ``set_proposal_thresholds``) runs these checks on all of its arguments before any
model work, so bad input fails fast with :class:`~vlxseek_core.errors.InvalidRequestError` (or
:class:`~vlxseek_core.errors.InvalidImageError` for the image), never with a numpy, torch or
transformers exception, and every message names the offending argument (``region_indices[2]``,
``queries[1][0]``, ``box_scores``, ...). Both errors are ``ValueError``
subclasses. The checks return normalised values (plain ``int``/``bool``, float64 arrays).
``from_pretrained``'s own arguments are checked in :mod:`.load_validation`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from .errors import InvalidImageError, InvalidRequestError
from .prompts import TASKS, task_parts
from .streaming import QueryProgress
from .tokens import MAX_REGIONS
from .types import Proposals

_NOT_SEQUENCES = (str, bytes, bytearray, dict, set, frozenset)


def _fail(name: str, what: str, value: Any = None) -> InvalidRequestError:
    return InvalidRequestError(f"{name} {what}, got {type(value).__name__} {_short(value)}")


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def flag(value: Any, name: str) -> bool:
    """``value`` as a ``bool``; only ``True``/``False`` (also numpy's) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, "must be True or False", value)
    return bool(value)


def integer(value: Any, name: str, lo: int, hi: Optional[int] = None,
            why: str = "") -> int:
    """An ``int`` (numpy ints too, never ``bool`` or ``float``) in ``[lo, hi]``."""
    span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    if not _is_int(value):
        raise _fail(name, f"must be an integer {span}", value)
    if value < lo or (hi is not None and value > hi):
        raise InvalidRequestError(f"{name} must be an integer {span}{why}, got {int(value)}")
    return int(value)


def number(value: Any, name: str) -> float:
    """A finite real number (not ``bool``)."""
    if not _is_real(value) or not math.isfinite(float(value)):
        raise _fail(name, "must be a finite number", value)
    return float(value)


def string(value: Any, name: str, allow_none: bool = False) -> Optional[str]:
    """A ``str`` encodable as UTF-8 (no lone surrogates); ``None`` when ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise _fail(name, "must be a str" + (" or None" if allow_none else ""), value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{name} is not valid Unicode text (lone surrogate)") from None
    return str(value)


def task(value: Any, name: str = "task", known: Optional[Mapping[str, Any]] = None) -> str:
    """A task name of :data:`~vlxseek_core.prompts.TASKS`; ``""`` means ``detect``.

    Args:
        known: the loaded model family's tasks (``ModelFamily.tasks``): an unknown name's
            message lists these, not every project task, since only they can be asked. A
            project task outside ``known`` passes here; the family's ``check_task`` refuses it.
    """
    value = string(value, name) or "detect"
    if value not in TASKS:
        raise InvalidRequestError(f"{name}={_short(value)} is not a known task; known tasks: "
                                  f"{', '.join(TASKS if known is None else known)}")
    return value


def text(value: Any, task_name: str, name: str = "text") -> str:
    """The user text of ``task_name``: a str, non-empty where the task needs one, at most
    :data:`~vlxseek_core.prompts.MAX_QUERY_CHARS` characters."""
    value = string(value, name)
    spec = TASKS[task_name]
    try:
        task_parts(task_name, value, [0] if spec.needs_regions else ())
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{name}: {exc}") from None
    return value


def queries(value: Any, default_task: str,
            known: Optional[Mapping[str, Any]] = None) -> List[Tuple[str, str]]:
    """``query_many``'s specs as ``(text, task)`` pairs.

    Args:
        value: a ``list`` whose items are texts (asked with ``default_task``) or
            ``(text, task)`` pairs (tuple or list of length 2; ``task`` ``None`` =
            ``default_task``). An empty list is valid (no query, nothing to run). Any other
            container is refused: a tuple of two strings would be ambiguous.
        default_task: the already validated ``task`` argument.
        known: as :func:`task`.
    """
    if not isinstance(value, list):
        raise _fail("queries", "must be a list of texts or (text, task) pairs", value)
    specs = []
    for i, item in enumerate(value):
        where = f"queries[{i}]"
        if isinstance(item, str):
            specs.append((text(item, default_task, where), default_task))
            continue
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            length = f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""
            raise InvalidRequestError(f"{where} must be a text or a (text, task) pair, got "
                                      f"{type(item).__name__}{length} {_short(item)}")
        name = default_task if item[1] is None else task(item[1], f"{where}[1]", known)
        specs.append((text(item[0], name, f"{where}[0]"), name))
    return specs


def region_indices(value: Any, name: str = "region_indices") -> Optional[List[int]]:
    """Region indices as a list of non-negative ``int`` (``None`` stays ``None``).

    Accepts any 1-D integer array-like: list, tuple, range, integer numpy array or torch
    tensor, with Python or numpy integers; at most :data:`~vlxseek_core.tokens.MAX_REGIONS`
    entries. Refuses scalars, strings, sets, bools, floats and arrays of other ranks.
    """
    if value is None:
        return None
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise InvalidRequestError(f"{name} must be 1-D, got an array of shape {value.shape}")
        if value.dtype.kind not in "iuO":
            raise InvalidRequestError(f"{name} must hold integers, got dtype {value.dtype}")
        items = list(value)
    elif isinstance(value, Sequence) and not isinstance(value, _NOT_SEQUENCES):
        items = list(value)
    else:
        raise _fail(name, "must be a 1-D sequence of integers (list, tuple, range or integer "
                    "array)", value)
    if len(items) > MAX_REGIONS:
        raise InvalidRequestError(f"{name} has {len(items)} entries; at most {MAX_REGIONS}")
    out = []
    for i, item in enumerate(items):
        out.append(integer(item, f"{name}[{i}]", 0))
    return out


def indices_in_range(indices: Optional[List[int]], num_regions: int,
                     name: str = "region_indices") -> None:
    """Every index refers to one of ``num_regions`` regions."""
    for i, idx in enumerate(indices or ()):
        if idx >= num_regions:
            raise InvalidRequestError(f"{name}[{i}]: region index {idx} out of range; there "
                                      f"are {num_regions} regions")


def max_new_tokens(value: Any, limit: int, name: str = "max_new_tokens") -> Optional[int]:
    """``None`` (the pipeline's default) or an int in ``[1, limit]``; ``limit`` is the model's
    ``max_position_embeddings``: no answer can be longer than the model's context."""
    if value is None:
        return None
    return integer(value, name, 1, limit, " (the model's max_position_embeddings)")


def image(value: Any):
    """The image as a PIL RGB image (:func:`~vlxseek_core.preprocessing.to_pil_rgb`).

    Raises:
        InvalidImageError: not an HWC/HW uint8 array or PIL image, empty, or unreadable.
    """
    from .preprocessing import to_pil_rgb

    try:
        return to_pil_rgb(value)
    except InvalidImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a lazily loaded, truncated PIL file
        raise InvalidImageError(f"image cannot be converted to RGB: {type(exc).__name__}: "
                                f"{exc}") from None


def numeric_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an int/float numpy array (any shape).

    Raises:
        InvalidRequestError: strings, mappings, sets, ragged nesting, ``None`` or other
            non-numbers inside, object/bool/complex arrays.
    """
    if isinstance(value, _NOT_SEQUENCES) or isinstance(value, Proposals):
        raise _fail(name, "must be a numeric array", value)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - numpy's errors for ragged/odd input vary
        raise InvalidRequestError(f"{name} must be a numeric array: rows of unequal length or "
                                  f"non-numeric entries ({type(exc).__name__})") from None
    if arr.dtype.kind not in "iuf":
        hint = (" (rows of unequal length, None or non-numeric entries)"
                if arr.dtype.kind == "O" else "")
        raise InvalidRequestError(f"{name} must hold numbers, got dtype {arr.dtype}{hint}")
    return arr


def boxes(value: Any, name: str = "boxes") -> Optional[np.ndarray]:
    """User boxes as float64 ``[K, 4]``, ``K >= 1``; ``None`` stays ``None`` (detector).

    Finiteness, positive size and the image bounds are checked by
    :func:`~vlxseek_core.proposals.validate_user_boxes` once the image size is known.
    """
    if value is None:
        return None
    arr = numeric_array(value, name)
    if arr.size == 0:
        raise InvalidRequestError(f"{name} is empty: give at least one [x1, y1, x2, y2] box, or "
                                  "boxes=None to use the proposal detector")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidRequestError(f"{name} must have shape [K, 4] (x1, y1, x2, y2 in pixels), "
                                  f"got shape {arr.shape}")
    return arr.astype(np.float64)


def box_scores(value: Any, boxes_: Optional[np.ndarray],
               name: str = "box_scores") -> Optional[np.ndarray]:
    """Scores of user boxes: float64 ``[K]``, finite, one per box; needs ``boxes``."""
    if value is None:
        return None
    if boxes_ is None:
        raise InvalidRequestError(f"{name} given without boxes: scores belong to user boxes")
    arr = numeric_array(value, name)
    if arr.ndim != 1 or len(arr) != len(boxes_):
        raise InvalidRequestError(f"{name} must have shape [{len(boxes_)}] (one per box), got "
                                  f"shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidRequestError(f"{name} must be finite, got {arr[~np.isfinite(arr)][0]}")
    return arr


@dataclass(frozen=True)
class FrameArgs:
    """The validated frame arguments of one call.

    Attributes:
        image: PIL RGB image.
        boxes: float64 ``[K, 4]`` user boxes or ``None``.
        box_scores: float64 ``[K]`` or ``None``.
        proposals: given :class:`~vlxseek_core.types.Proposals` or ``None``.
        reuse_frame: use the frame cache.
    """

    image: Any
    boxes: Optional[np.ndarray]
    box_scores: Optional[np.ndarray]
    proposals: Optional[Proposals]
    reuse_frame: bool = True


def frame_args(image_: Any, boxes_: Any = None, box_scores_: Any = None,
               proposals: Any = None, reuse_frame: Any = True) -> FrameArgs:
    """Check everything that defines a frame's regions (see :class:`FrameArgs`)."""
    pil = image(image_)
    b = boxes(boxes_)
    s = box_scores(box_scores_, b)
    if proposals is not None:
        proposals = given_proposals(proposals)
        if b is not None:
            raise InvalidRequestError("boxes and proposals: give either user boxes or "
                                      "proposals, not both")
    return FrameArgs(pil, b, s, proposals, flag(reuse_frame, "reuse_frame"))


def given_proposals(value: Any) -> Proposals:
    """A private float32 copy of caller-given :class:`~vlxseek_core.types.Proposals` (which
    may have been edited after construction): ``[N, 4]`` boxes and ``[N]`` scores, ``N >= 0``.
    Finiteness, size and bounds are checked with the user-box rules once the image is known."""
    if not isinstance(value, Proposals):
        raise _fail("proposals", "must be a vlxseek_core.Proposals or None", value)
    b = numeric_array(value.boxes, "proposals.boxes")
    s = numeric_array(value.scores, "proposals.scores")
    if (b.ndim != 2 or b.shape[1] != 4) and b.size:
        raise InvalidRequestError(f"proposals.boxes must have shape [N, 4], got {b.shape}")
    if s.ndim != 1 or len(s) != len(b.reshape(-1, 4)):
        raise InvalidRequestError(f"proposals.scores must have shape [{len(b.reshape(-1, 4))}]"
                                  f", got {s.shape}")
    with np.errstate(over="ignore"):
        return Proposals(b.astype(np.float32), s.astype(np.float32))


def regions_available(specs: List[Tuple[str, str]], indices: Optional[List[int]],
                      frame: FrameArgs) -> None:
    """A region task needs ``region_indices`` or user boxes (which it then refers to)."""
    for _, name in specs:
        if TASKS[name].needs_regions and not indices and frame.boxes is None:
            raise InvalidRequestError(
                f"task {name!r} needs regions: pass boxes= (all of them are referred to) or "
                "region_indices= (indices into the regions shown to the model)")


def thresholds(min_score: Any = None, nms_iou: Any = None, max_proposals: Any = None,
               names: Tuple[str, str, str] = ("min_score", "nms_iou", "max_proposals")) -> None:
    """Proposal filter values; each may be ``None`` (= unchanged / default). ``names`` are
    the argument names used in messages."""
    if min_score is not None:
        number(min_score, names[0])
    if nms_iou is not None:
        number(nms_iou, names[1])
    if max_proposals is not None:
        integer(max_proposals, names[2], 1, MAX_REGIONS,
                " (VLM-FO1 refers to at most 100 regions)")


def pipeline_options(max_new_tokens_: Any, constrained_decoding: Any, frame_cache_size: Any,
                     limit: int) -> Tuple[int, bool, int]:
    """``VLXSeek`` constructor options: default budget, constraint flag, cache size."""
    if max_new_tokens_ is None:
        raise _fail("max_new_tokens", "must be an integer (the default budget)", None)
    return (max_new_tokens(max_new_tokens_, limit), flag(constrained_decoding,
            "constrained_decoding"), integer(frame_cache_size, "frame_cache_size", 0, 1024))


def progress(value: Any, name: str = "progress") -> Optional[QueryProgress]:
    """``None`` or a :class:`~vlxseek_core.streaming.QueryProgress`.

    Raises:
        InvalidRequestError: anything else.
    """
    if value is not None and not isinstance(value, QueryProgress):
        raise _fail(name, "must be a vlxseek_core.streaming.QueryProgress or None", value)
    return value
