"""Persistent track ids for the detections of a standing query (issue 10 §6; no ROS imports).

A robot asks the same question of every frame ("the person in red") and needs to know whether
this frame's answer is the object it saw before. The tracker is ByteTrack from Roboflow's
``trackers`` library (Apache-2.0, clean-room implementations of SORT, ByteTrack, OC-SORT,
BoT-SORT, maintained and benchmarked on MOT17/DanceTrack). Why ByteTrack: VLM-FO1 detections
have no appearance embedding to re-identify with, so a motion + IoU tracker is the right
class; ByteTrack is the standard one of that class, and ``trackers`` takes the frame time, so
an irregular frame rate (a standing query answers whatever frame is newest) keeps the Kalman
prediction right.

Conventions:

* one ByteTrack per grounded phrase, so two phrases never swap ids, and ids are unique over
  all phrases of a :class:`RegionTracker`;
* every detection the model chose counts as confident (its score is the proposal detector's,
  not the model's): it is never dropped to ByteTrack's low-confidence stage;
* a new object gets its id from its second consecutive detection (ByteTrack confirms a track
  on a match); until then its id is ``None``;
* a track survives ``lost_track_seconds`` without detections and then ends; ids are not
  reused.

``trackers`` pulls ``opencv-python``, which would shadow the headless OpenCV that ROS and
this package use, so it is installed with ``--no-deps`` (README "Tracked targets").
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import InvalidRequestError, VLXSeekError

INSTALL_HINT = ('pip install "vlxseek[track]" && pip install --no-deps "trackers>=2.6,<3"')


class TrackingUnavailableError(VLXSeekError):
    """The ``trackers`` library (or one of its dependencies) is not installed."""


def _tracker_class():
    try:
        import supervision  # noqa: F401
        from trackers import ByteTrackTracker
    except ImportError as exc:
        raise TrackingUnavailableError(
            f"tracking needs the 'trackers' library ({exc}); install it with: "
            f"{INSTALL_HINT}") from exc
    return ByteTrackTracker


class RegionTracker:
    """Track ids for per-frame detections, one ByteTrack per phrase.

    Args:
        lost_track_seconds: how long a track outlives its last detection (seconds, > 0).
        frame_rate: nominal frames per second of the standing query (ByteTrack scales its
            buffer with it; the Kalman step uses the real frame times).
        min_iou: smallest IoU that associates a detection with a track.

    Raises:
        TrackingUnavailableError: ``trackers`` is not installed.
        InvalidRequestError: a non-positive ``lost_track_seconds`` or ``frame_rate``, or
            ``min_iou`` outside ``[0, 1)``.
    """

    def __init__(self, lost_track_seconds: float = 2.0, frame_rate: float = 2.0,
                 min_iou: float = 0.1):
        if not lost_track_seconds > 0 or not frame_rate > 0:
            raise InvalidRequestError(
                f"tracking: lost_track_seconds ({lost_track_seconds}) and frame_rate "
                f"({frame_rate}) must be > 0")
        if not 0 <= min_iou < 1:
            raise InvalidRequestError(f"tracking: min_iou must be in [0, 1), got {min_iou}")
        self._cls = _tracker_class()
        self.frame_rate = float(frame_rate)
        # trackers counts its buffer in frames of a 30 fps video and converts it to seconds
        # (buffer / 30) for timestamped updates
        self.lost_frames = max(1, int(round(lost_track_seconds * 30.0)))
        self.min_iou = float(min_iou)
        self._trackers: Dict[str, object] = {}
        self._ids: Dict[tuple, int] = {}  # (generation, phrase, ByteTrack id) -> public id
        self._generation = 0  # ByteTrack numbers its tracks per instance, from 0
        self._last_stamp: Optional[float] = None

    def reset(self) -> None:
        """Forget every track (the standing query changed); ids keep counting up."""
        self._trackers.clear()
        self._generation += 1
        self._last_stamp = None

    def update(self, boxes: np.ndarray, labels: Sequence[str],
               stamp: float) -> List[Optional[int]]:
        """Associate one frame's detections with the tracks.

        Args:
            boxes: float ``[N, 4]`` xyxy pixels of the frame (same camera every call).
            labels: ``N`` grounded phrases (one tracker per phrase).
            stamp: the frame's time in seconds (header stamp); must not go backwards.

        Returns:
            ``N`` track ids (``int``) in input order; ``None`` for a detection whose track is
            not confirmed yet.

        Raises:
            InvalidRequestError: shapes do not match, non-finite boxes, or a stamp older than
                the previous one (call :meth:`reset` first when the time source jumps back).
        """
        import supervision as sv

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(labels) != len(boxes) or not np.isfinite(boxes).all():
            raise InvalidRequestError(f"tracking: {len(boxes)} finite boxes and {len(labels)} "
                                      f"labels expected to match")
        if self._last_stamp is not None and stamp < self._last_stamp:
            raise InvalidRequestError(f"tracking: frame stamp {stamp} is older than the "
                                      f"previous one ({self._last_stamp})")
        self._last_stamp = float(stamp)
        out: List[Optional[int]] = [None] * len(boxes)
        # every phrase's tracker steps every frame, so its tracks age even when absent
        for phrase in set(labels) | set(self._trackers):
            rows = np.array([i for i, lab in enumerate(labels) if lab == phrase], dtype=int)
            tracker = self._trackers.get(phrase)
            if tracker is None:
                tracker = self._cls(lost_track_buffer=self.lost_frames,
                                    frame_rate=self.frame_rate, minimum_consecutive_frames=1,
                                    minimum_iou_threshold=self.min_iou)
                self._trackers[phrase] = tracker
            dets = sv.Detections(xyxy=boxes[rows] if len(rows) else np.zeros((0, 4), np.float32),
                                 confidence=np.ones(len(rows), dtype=np.float32),
                                 data={"row": rows})
            tracked = tracker.update(dets, timestamp=float(stamp))
            for row, tid in zip(tracked.data.get("row", ()), tracked.tracker_id):
                if int(tid) >= 0:
                    key = (self._generation, phrase, int(tid))
                    out[int(row)] = self._ids.setdefault(key, len(self._ids))
        return out
