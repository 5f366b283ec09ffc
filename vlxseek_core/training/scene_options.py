"""The options of a scene's records (:func:`~.scene_data.scene_records`) and their checks,
run before any scene is generated (``vlxseek make-scenes``)."""
from __future__ import annotations

from typing import Optional, Sequence

from ..errors import InvalidRequestError
from ..tokens import MAX_REGIONS
from .records import check_int
from .scenes import check_rate

DETECT_ALL_ORDERS = ("leftmost", "random")
"""The category orders of a ``detect_all`` answer (``make-scenes --detect-all-order``)."""

REFER_KINDS = ("category", "shape", "colour", "superlative")
"""The kinds of a present ``refer`` target (:func:`~.scene_data.referring_expressions`)."""

SCENE_TASKS = ("detect", "detect_all", "refer", "count", "caption", "single")
"""The record tasks of a scene (:func:`~.scene_data.scene_records`; ``single``: one-region
records)."""


def check_record_options(*, max_objects: Optional[int] = None, rejection_rate=0.2,
                         detect_extra_absent=0.5, max_candidates=12,
                         max_distractors: Optional[int] = None, refer_per_scene=2,
                         tasks: Sequence[str] = ("detect", "refer", "count", "caption"),
                         heldout_preference=0.7, detect_all_order: str = "leftmost",
                         detect_all_article=0.0, absent_near=0.0, detect_all_alias=0.0,
                         refer_kinds: Optional[Sequence[str]] = None) -> None:
    """Check :func:`~.scene_data.scene_records`' options (same names and defaults) before
    any is used.

    :func:`~.scene_data.make_scenes` calls it with ``max_objects`` before it writes anything,
    so that a bad option stops the run with no file written, not in a worker after some
    scenes; then
    ``max_candidates`` must hold every object of the fullest scene (each object is a
    ground-truth box of the candidate list).

    Raises:
        InvalidRequestError: the rates outside [0, 1], ``max_candidates`` outside 1-100 or
            below ``max_objects``, ``max_distractors`` or ``refer_per_scene`` not an integer
            >= 0, a task not in :data:`SCENE_TASKS`, an unknown ``detect_all_order``, an
            empty ``refer_kinds`` or one not in :data:`REFER_KINDS`.
    """
    for name, rate in (("rejection_rate", rejection_rate),
                       ("detect_extra_absent", detect_extra_absent),
                       ("heldout_preference", heldout_preference),
                       ("detect_all_article", detect_all_article), ("absent_near", absent_near),
                       ("detect_all_alias", detect_all_alias)):
        check_rate(rate, name)
    check_int(max_candidates, "max_candidates", 1, MAX_REGIONS)
    if max_objects is not None and max_candidates < max_objects:
        raise InvalidRequestError(f"max_candidates ({max_candidates}) must hold every object of "
                                  f"a scene: at least max_objects ({max_objects})")
    for name, value in (("max_distractors", max_distractors),
                        ("refer_per_scene", refer_per_scene)):
        if value is not None:
            check_int(value, name)
    if isinstance(tasks, str) or not all(t in SCENE_TASKS for t in tasks):
        raise InvalidRequestError(f"scene tasks are some of {', '.join(SCENE_TASKS)}, "
                                  f"got {tasks!r}")
    if detect_all_order not in DETECT_ALL_ORDERS:
        raise InvalidRequestError(f"detect_all_order must be one of {DETECT_ALL_ORDERS}, "
                                  f"got {detect_all_order!r}")
    if refer_kinds is not None and (not refer_kinds or set(refer_kinds) - set(REFER_KINDS)):
        raise InvalidRequestError(f"refer_kinds must be some of {REFER_KINDS}, "
                                  f"got {list(refer_kinds)}")
