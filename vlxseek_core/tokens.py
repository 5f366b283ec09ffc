"""Token strings and placeholder ids of VLM-FO1 (spec §3.1).

Only the *strings* are fixed here. Token ids of added tokens are always read from the
checkpoint's tokenizer (spec §7.16), never assumed.
"""
from __future__ import annotations

MAX_REGIONS = 100
"""At most this many region tokens (``<region0>``…``<region99>``) exist (spec §3.5)."""

IMAGE_PLACEHOLDER = "<image>"
REGION_FEATURE_PLACEHOLDER = "<regionfeat>"
IMAGE_PLACEHOLDER_ID = -200
REGION_FEATURE_PLACEHOLDER_ID = -300

GROUND_OPEN, GROUND_CLOSE = "<ground>", "</ground>"
OBJECTS_OPEN, OBJECTS_CLOSE = "<objects>", "</objects>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"

SYSTEM_PROMPT = "You are a helpful assistant."

# The Qwen2.5-VL special tokens in id order, starting at 151643 (stock tokenizer).
QWEN25_SPECIAL_TOKENS = (
    END_OF_TEXT, IM_START, IM_END,
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", VISION_START, VISION_END, "<|vision_pad|>",
    IMAGE_PAD, "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN25_FIRST_SPECIAL_ID = 151643


def region_token(index: int) -> str:
    """The region index token string for region ``index`` (lower-case, spec §3.1)."""
    if not 0 <= index < MAX_REGIONS:
        raise ValueError(f"region index {index} outside [0, {MAX_REGIONS})")
    return f"<region{index}>"


REGION_TOKENS = tuple(f"<region{i}>" for i in range(MAX_REGIONS))
GROUNDING_TOKENS = (GROUND_OPEN, GROUND_CLOSE, OBJECTS_OPEN, OBJECTS_CLOSE)
VLM_FO1_ADDED_TOKENS = REGION_TOKENS + GROUNDING_TOKENS + (THINK_OPEN, THINK_CLOSE)
"""Tokens a VLM-FO1 tokenizer adds to Qwen2.5-VL, in the order this project writes them."""
