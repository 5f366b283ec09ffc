"""Parse VLM-FO1 answers into grounded region indices (spec §4.4, §5.2).

Accepted forms, in order of preference:

* ``<ground>phrase</ground><objects><region3><region7></objects>`` repeated per phrase; also the
  paper's spelling ``<object>…</object>``, whitespace between the tags, and newlines anywhere;
* bare ``<regionK>`` references when the answer has no grounded block (demo outputs): each
  becomes its own grounding labelled ``<regionK>``.

Unlike the reference (which raises on an index ≥ N), out-of-range indices are dropped and
reported, never raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .tokens import IM_END, END_OF_TEXT
from .types import Grounding

# A label never spans another <ground> tag: in "<ground>a</ground>\n<ground>b</ground><objects>…"
# the block is "b" (the reference, whose "." stops at the newline, reads it so too).
_GROUNDED = re.compile(
    r"<ground>((?:(?!</?ground>).)*?)</ground>\s*<(objects?)>(.*?)</\2>", re.DOTALL)
_REGION = re.compile(r"<region(\d+)>")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_COUNT_INT = re.compile(r"(?<!region)\d+")


@dataclass
class ParsedAnswer:
    """Result of :func:`parse_answer`.

    Attributes:
        groundings: phrases with their valid region indices (sorted, unique), in answer order;
            a phrase that occurs twice is merged (set union, as the reference); a phrase whose
            indices were all out of range keeps an empty list.
        dropped_indices: indices ≥ ``num_regions`` that were referenced and ignored.
        malformed: fragments that looked like markup but did not parse (e.g. an unclosed
            ``<ground>``), for reporting.
    """

    groundings: List[Grounding] = field(default_factory=list)
    dropped_indices: List[int] = field(default_factory=list)
    malformed: List[str] = field(default_factory=list)

    @property
    def region_indices(self) -> List[int]:
        """All referred valid indices, unique, in first-mention order."""
        seen: Dict[int, None] = {}
        for g in self.groundings:
            for i in g.region_indices:
                seen.setdefault(i, None)
        return list(seen)

    def warnings(self) -> List[str]:
        """Human-readable problems, empty when the answer parsed cleanly."""
        notes = []
        if self.dropped_indices:
            notes.append("answer referred to nonexistent regions "
                         f"{sorted(set(self.dropped_indices))}; they were dropped")
        if self.malformed:
            notes.append(f"unparsed markup in answer: {self.malformed[:3]}")
        return notes


def strip_end_tokens(text: str) -> str:
    """Remove ``<|im_end|>``/``<|endoftext|>`` and surrounding whitespace (spec §4.3)."""
    return text.replace(IM_END, "").replace(END_OF_TEXT, "").strip()


def parse_answer(text: str, num_regions: int) -> ParsedAnswer:
    """Parse an answer string into groundings.

    Args:
        text: the decoded answer (special tokens kept).
        num_regions: number of regions shown to the model; valid indices are ``[0, num_regions)``.

    Returns:
        :class:`ParsedAnswer`. Never raises for any ``str`` input.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"answer must be str, got {type(text).__name__}")
    parsed = ParsedAnswer()
    merged: Dict[str, set] = {}
    order: List[str] = []

    def add(phrase: str, indices: List[int]) -> None:
        valid = []
        for idx in indices:
            if 0 <= idx < num_regions:
                valid.append(idx)
            else:
                parsed.dropped_indices.append(idx)
        if phrase not in merged:
            merged[phrase] = set()
            order.append(phrase)
        merged[phrase].update(valid)

    remainder_parts = []
    last = 0
    for match in _GROUNDED.finditer(text):
        remainder_parts.append(text[last:match.start()])
        last = match.end()
        add(match.group(1).strip(), [int(i) for i in _REGION.findall(match.group(3))])
    remainder_parts.append(text[last:])
    remainder = "".join(remainder_parts)

    # Bare references count only when there is no grounded block (as the reference demos);
    # otherwise they are mentions, e.g. inside <think>.
    bare = [] if order else [int(i) for i in _REGION.findall(remainder)]
    for idx in bare:
        if 0 <= idx < num_regions:
            add(f"<region{idx}>", [idx])
        else:
            parsed.dropped_indices.append(idx)
    for tag in ("<ground>", "<objects>", "<object>"):
        if tag in remainder:
            parsed.malformed.append(tag)

    parsed.groundings = [Grounding(p, sorted(merged[p])) for p in order]
    return parsed


def extract_count(text: str) -> int:
    """The counting answer's number (spec §5.2): first integer after removing region tags.

    Returns 0 when the answer holds no integer (as the reference evaluation does).
    """
    cleaned = _REGION.sub("", text)
    match = _COUNT_INT.search(cleaned)
    return int(match.group(0)) if match else 0


def extract_reasoning(text: str) -> tuple:
    """Split a ``reason`` answer into ``(thinking, answer_text)``; missing parts are ``None``."""
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    return (think.group(1).strip() if think else None,
            answer.group(1).strip() if answer else None)


def first_region_index(parsed: ParsedAnswer) -> Optional[int]:
    """The first referred region (REC evaluation takes the first box), or ``None``."""
    indices = parsed.region_indices
    return indices[0] if indices else None
