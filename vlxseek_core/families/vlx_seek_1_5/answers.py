"""VLX-Seek 1.5 answers: completion → caller-index answer, groundings and the reference's
``result_bbox_list`` (spec vlx-seek-1.5 §4.4, §4.5).

The markup is VLM-FO1's with ``<objK>`` tokens, so the shared parser
(:func:`vlxseek_core.parsing.parse_answer` with ``index_tokens=OBJ_TOKENS``) reads it, including
whitespace/newlines between ``</ground>`` and ``<objects>`` and the explicit rejection
``<ground>X</ground><objects>None</objects>``. Blocks are found by the shared linear-time scanner,
which agrees with the reference regex ``<ground>(.*?)</ground>\\s*<objects>(.*?)</objects>``
(DOTALL) except that a label never spans another ``<ground>`` tag and the paper's ``<object>``
spelling is also read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from ...parsing import ParsedAnswer, grounded_blocks, parse_answer, read_count
from ...tokens import IM_END
from .box_order import OBJ_TOKENS, BoxOrder


@dataclass(frozen=True)
class Answer:
    """A VLX-Seek 1.5 completion read in the caller's box indices.

    Attributes:
        text: the completion with every ``<|im_end|>`` removed, stripped and remapped to caller
            indices (the reference's ``answer``).
        parsed: :func:`~vlxseek_core.parsing.parse_answer` of ``text`` with ``<objK>`` tokens;
            a rejection ``<ground>X</ground><objects>None</objects>`` gives no grounding and
            ``X`` in ``parsed.rejected``.
        entries: ``(caller index, label)`` per ``<objK>`` occurrence inside the blocks, in
            answer order, duplicates kept, out-of-range ones skipped (the reference's
            ``result_bbox_list`` order).
        count: the counting answer's number, or ``None``.
    """

    text: str
    parsed: ParsedAnswer
    entries: Tuple[Tuple[int, str], ...]
    count: Optional[int]


def read_answer(completion: str, order: BoxOrder) -> Answer:
    """Read a decoded completion (``skip_special_tokens=False``) (spec §4.5).

    Raises:
        InvalidRequestError: ``completion`` is not a ``str``.
    """
    if not isinstance(completion, str):
        raise InvalidRequestError(f"completion must be str, got {type(completion).__name__}")
    text = order.answer_to_caller(completion.replace(IM_END, "").strip())
    n = len(order)
    entries = []
    for label, inner in grounded_blocks(text):
        for digits in OBJ_TOKENS.pattern.findall(inner):
            if len(digits.lstrip("0")) <= 9 and int(digits) < n:
                entries.append((int(digits), label.strip()))
    return Answer(text, parse_answer(text, n, OBJ_TOKENS), tuple(entries),
                  read_count(text, OBJ_TOKENS))


def result_bbox_list(answer: Answer, order: BoxOrder) -> List[Dict[str, Any]]:
    """The reference's ``result_bbox_list``: per entry ``object_index`` (``"<objC>"``, caller
    index), the clipped caller box ``xmin, ymin, xmax, ymax`` (floats, pixels) and ``label``."""
    out = []
    for idx, label in answer.entries:
        x1, y1, x2, y2 = (float(v) for v in order.caller_boxes[idx])
        out.append({"object_index": OBJ_TOKENS.token(idx), "xmin": x1, "ymin": y1,
                    "xmax": x2, "ymax": y2, "label": label})
    return out
