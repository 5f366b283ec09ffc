"""Argument checks of ``VLXSeek.from_pretrained`` (apart from :mod:`.validation`, which checks
the per-request arguments, to keep that module within the size guideline; same conventions:
:class:`~vlxseek_core.errors.InvalidRequestError` naming the argument, before any work).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .errors import InvalidRequestError
from .validation import _fail, _short, flag, integer, string, thresholds

ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2")
PIPELINE_OPTIONS = ("max_new_tokens", "constrained_decoding", "frame_cache_size")
"""Keyword arguments ``from_pretrained`` passes on to ``VLXSeek``."""


def load_args(model_path: Any, device: Any, dtype: Any, proposal_source: Any,
              proposal_model: Any, min_score: Any, nms_iou: Any, max_proposals: Any,
              allow_key_mismatch: Any, attn_implementation: Any, compile_towers: Any,
              options: dict, kinds: Sequence[str],
              dtype_check: Callable[[Any], bool]) -> None:
    """The arguments of ``VLXSeek.from_pretrained`` (names as there, ``proposal_``-prefixed
    thresholds); ``options`` are its ``**kwargs``, ``kinds`` the proposal kinds,
    ``dtype_check`` tells whether a non-str ``dtype`` is a ``torch.dtype``."""
    if not isinstance(model_path, (str, os.PathLike)) or not os.fspath(model_path):
        raise _fail("model_path", "must be a non-empty directory path or hub repo id", model_path)
    string(device, "device")
    if not isinstance(dtype, str) and not dtype_check(dtype):
        raise _fail("dtype", "must be a str (auto, float32, bfloat16, float16) or torch.dtype",
                    dtype)
    kind = string(proposal_source, "proposal_source").strip().lower().replace("-", "_")
    if kind not in kinds:
        raise InvalidRequestError(f"proposal_source={_short(proposal_source)} is not a known "
                                  f"proposal kind; expected one of {', '.join(kinds)}")
    if proposal_model is not None and not isinstance(proposal_model, (str, os.PathLike)):
        raise _fail("proposal_model", "must be a directory path, hub id or None", proposal_model)
    thresholds(min_score, nms_iou, max_proposals,
               names=("proposal_min_score", "proposal_nms_iou", "max_proposals"))
    if min_score is None or nms_iou is None or max_proposals is None:
        which = "proposal_min_score" if min_score is None else (
            "proposal_nms_iou" if nms_iou is None else "max_proposals")
        raise _fail(which, "must be given (a number)", None)
    flag(allow_key_mismatch, "allow_key_mismatch")
    if string(attn_implementation, "attn_implementation") not in ATTN_IMPLEMENTATIONS:
        raise InvalidRequestError(f"attn_implementation={_short(attn_implementation)} is not "
                                  f"one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if compile_towers is not None and not string(compile_towers, "compile_towers"):
        raise InvalidRequestError("compile_towers must be a torch.compile backend name or None")
    unknown = sorted(set(options) - set(PIPELINE_OPTIONS))
    if unknown:
        raise InvalidRequestError(f"unknown keyword argument(s) {', '.join(unknown)}; "
                                  f"from_pretrained passes on only {', '.join(PIPELINE_OPTIONS)}")
    # the upper bound of max_new_tokens needs the config: VLXSeek checks it once loaded
    if "max_new_tokens" in options:
        integer(options["max_new_tokens"], "max_new_tokens", 1)
    if "constrained_decoding" in options:
        flag(options["constrained_decoding"], "constrained_decoding")
    if "frame_cache_size" in options:
        integer(options["frame_cache_size"], "frame_cache_size", 0, 1024)
