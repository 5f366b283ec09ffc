"""The answer strings the model is trained to write, and that :mod:`vlxseek_core.parsing` reads.

One place defines the markup so that training targets and inference parsing cannot drift apart
(issue 9: "the training data's rejection answer is one documented form, the same one that
inference parses"):

* found: ``<ground>red circle</ground><objects><region3><region7></objects>`` (spec §4.4);
* **rejection** (the target is absent): ``<ground>knife</ground><objects>None</objects>``, the
  form VLX-Seek 1.5 uses for its explicit ``None`` answer (spec vlx-seek-1.5 §4.5);
* counting: the blocks, then the number as plain text (``…</objects>2``; ``0`` after a
  rejection block), which :func:`~vlxseek_core.parsing.extract_count` reads (spec §5.2).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

from .tokens import GROUND_CLOSE, GROUND_OPEN, OBJECTS_CLOSE, OBJECTS_OPEN, region_token

REJECTION_TEXT = "None"
"""What stands inside ``<objects>…</objects>`` when the phrase matches no region."""
MARKUP = re.compile(r"<\|[^<>|]+\|>|</?(?:ground|objects|think|tool_call)>|<region(?:\d+|feat)>"
                    r"|<image>")
"""Text that is no plain label text: the chat template's ``<|…|>`` tokens, the VLM-FO1 and
Qwen2 added tokens, the image and region-feature placeholders. In a training answer it is
written as the special token itself, so a grounded label may hold it only as a visual prompt's
label (:func:`label_ok`)."""
_REGION_LABEL = re.compile(r"(?:<region\d+>)+")


def label_ok(label: str) -> bool:
    """Whether ``label`` can stand between ``<ground>`` and ``</ground>``: plain text without
    :data:`MARKUP`, or only region tokens, the label of a ``visual_prompt`` answer
    (``<ground><region1></ground><objects><region0><region2></objects>``: the objects like the
    reference region 1)."""
    return not MARKUP.search(label) or bool(_REGION_LABEL.fullmatch(label.strip()))


def grounded_block(label: str, region_indices: Sequence[int]) -> str:
    """One ``<ground>label</ground><objects>…</objects>`` block.

    Args:
        label: the grounded phrase (category, expression); stripped.
        region_indices: indices into the regions shown to the model, written in the order
            given; empty → the rejection block ``<objects>None</objects>``.

    Raises:
        ValueError: an empty label, a label that is not :func:`label_ok`, or an index
            outside ``[0, 100)``.
    """
    label = label.strip()
    if not label:
        raise ValueError("a grounded block needs a non-empty label")
    if not label_ok(label):
        raise ValueError(f"a grounded label must be plain text, not markup: {label!r}")
    inner = "".join(region_token(int(i)) for i in region_indices) or REJECTION_TEXT
    return f"{GROUND_OPEN}{label}{GROUND_CLOSE}{OBJECTS_OPEN}{inner}{OBJECTS_CLOSE}"


def format_answer(blocks: Sequence[Tuple[str, Sequence[int]]],
                  count: Optional[int] = None) -> str:
    """A whole answer: one block per ``(label, region indices)``, then ``count`` if given.

    Raises:
        ValueError: no blocks, or as :func:`grounded_block`.
    """
    if not blocks:
        raise ValueError("an answer needs at least one grounded block")
    text = "".join(grounded_block(label, idx) for label, idx in blocks)
    return text if count is None else f"{text}{int(count)}"
