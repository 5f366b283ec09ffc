"""The serving state's types and limits: the runtime-parameter snapshot, the frame and proposal
records of the frame store, :class:`BusyError` and the request limits.

Plain data shared by the parts of :class:`vlxseek_ros.serving.DetectorServing` (no node code);
every part imports it, it imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
from sensor_msgs.msg import Image

# Proposal arrays kept for matching (by arrival; enough for a detector a few seconds behind).
PROPOSAL_BUFFER = 64
# Repeated identical problems are logged at most once per this many seconds.
LOG_REPEAT_S = 10.0
# VLM-FO1 accepts at most this many regions; a request with more keeps the first ones.
MAX_REGIONS = 100
# Longest accepted query, characters (longer ones would overflow the model's context).
MAX_QUERY_CHARS = 4096
# The load summary is logged at most once per this many seconds.
STATUS_LOG_S = 60.0


class BusyError(Exception):
    """The model is busy (policy ``reject``, ``busy_timeout_s`` passed, or shutting down)."""


@dataclass(frozen=True)
class Runtime:
    """Parameters that may change at runtime (one consistent snapshot per use)."""

    standing_query: str
    standing_task: str
    max_rate_hz: float
    max_new_tokens: int
    publish_debug_image: bool
    busy_policy: str
    busy_timeout_s: float
    proposal_stamp_tolerance_s: float
    proposal_wait_s: float
    latency_budget_ms: float
    error_after_failures: int
    stale_frame_s: float


@dataclass
class Frame:
    """An image of the subscription and its arrival number (1, 2, ...)."""

    msg: Image
    seq: int
    used: bool = False       # a query took it (else replacing it counts as a dropped frame)
    answered: bool = False   # a query about it succeeded


@dataclass(frozen=True)
class ExternalProposals:
    """One array of the ``proposals`` topic: raw xyxy boxes ``[N, 4]`` and scores ``[N]``."""

    frame_id: str
    boxes: np.ndarray
    scores: np.ndarray


def seconds_to_ns(seconds: float) -> int:
    return int(round(float(seconds) * 1e9))


def task_specs(pipe: Any = None) -> Dict[str, Any]:
    """Task name -> spec (``needs_query``, ``needs_regions``): the tasks of ``pipe``'s model
    family (``VLXSeek.tasks``), else all of vlxseek_core's (no pipeline yet, or a stand-in
    without ``tasks``)."""
    specs = getattr(pipe, "tasks", None)
    if specs is None:
        from vlxseek_core.prompts import TASKS as specs
    return dict(specs)
