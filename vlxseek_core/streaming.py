"""Progress, token streaming and cancellation of one query (issue 10 §7; no ROS imports).

The ROS ``~/query`` action reports the stage a query is in and the answer so far, and its
client may cancel. :class:`QueryProgress` is what :meth:`VLXSeek.query` accepts for that:

* ``on_stage(name)`` is called as the query enters ``proposals``, ``encode`` (both towers and
  the HFRE; skipped when the frame cache already holds the frame) and ``generate``;
* ``on_token(text, num_tokens)`` after every generated token, with the decoded answer so far
  (markup kept, end tokens removed) — transformers' streamer interface underneath;
* ``cancel`` (a ``threading.Event``) is checked by a transformers ``StoppingCriteria`` at
  every decoding step, so generation stops within one step of ``cancel.set()`` (the step in
  flight finishes: transformers checks the criteria before it streams that step's token); the
  result then says ``cancelled=True`` and holds the partial answer. It is also checked between
  stages: set during ``proposals``, the towers and the HFRE are skipped (the half-done frame is
  not cached); set during ``encode`` or the prompt-prefix prefill (both run to the end and stay
  cached), nothing is decoded. That result says ``cancelled=True`` with the warning
  ``cancelled before decoding``, no answer and no detections, and keeps the proposals.

Callbacks run on the thread that runs the query; they must be quick and must not raise (an
exception from a callback is logged by the caller's wrapper, never by the model).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

STAGES = ("proposals", "encode", "generate")


@dataclass(eq=False)  # identity semantics: hashable, one object per query
class QueryProgress:
    """Observers and the cancel switch of one query (all optional).

    Attributes:
        on_stage: called with a name from :data:`STAGES` as the query enters it.
        on_token: called with ``(answer so far, tokens generated)`` after every token.
        cancel: set it (from any thread) to stop the query: generation after the current
            step, or, before decoding, at the end of the stage in flight.
    """

    on_stage: Optional[Callable[[str], None]] = None
    on_token: Optional[Callable[[str, int], None]] = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def stage(self, name: str) -> None:
        """Report entering stage ``name``."""
        if self.on_stage is not None:
            self.on_stage(name)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()


class AnswerStreamer(BaseStreamer):
    """transformers streamer that calls ``progress.on_token`` with the decoded answer so far.

    Args:
        tokenizer: decodes the generated ids (markup tokens kept).
        progress: whose ``on_token`` receives the text.
        clean: turns the raw decoded text into the answer (e.g. strips end tokens).
    """

    def __init__(self, tokenizer, progress: QueryProgress,
                 clean: Callable[[str], str] = lambda s: s):
        self.tokenizer = tokenizer
        self.progress = progress
        self.clean = clean
        self.ids: List[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        """Called by ``generate``: first with the prompt ids (ignored), then per step."""
        if not self._prompt_seen:  # generate passes the (here empty) prompt ids first
            self._prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        if self.progress.on_token is not None:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
            self.progress.on_token(self.clean(text), len(self.ids))

    def end(self) -> None:
        """Called by ``generate`` when it stops."""


class CancelCriteria(StoppingCriteria):
    """Stops ``generate`` after the current step once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)
