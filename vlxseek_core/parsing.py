"""Parse VLM-FO1 answers into grounded region indices (spec §4.4, §5.2).

Accepted forms, in order of preference:

* ``<ground>phrase</ground><objects><region3><region7></objects>`` repeated per phrase; also the
  paper's spelling ``<object>…</object>``, whitespace between the tags, and newlines anywhere;
* the rejection ``<ground>knife</ground><objects>None</objects>`` (the phrase is absent; the
  ``None`` may have whitespace around it), see :mod:`vlxseek_core.answer_format`;
* bare ``<regionK>`` references when the answer has no grounded block (demo outputs): each
  becomes its own grounding labelled ``<regionK>``.

The index tokens' spelling is a parameter (:class:`IndexTokens`): ``<regionK>`` for VLM-FO1 (the
default everywhere), ``<objK>`` for VLX-Seek 1.5 (spec vlx-seek-1.5 §4.5, same markup otherwise).

Unlike the reference (which raises on an index ≥ N), out-of-range indices are dropped and
reported, never raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from .answer_format import REJECTION_TEXT
from .tokens import IM_END, END_OF_TEXT
from .types import Grounding

_SPACE = re.compile(r"\s*")
_MAX_DIGITS = 4000
"""Longer numbers are read as ``10 ** _MAX_DIGITS`` (``int()`` refuses > 4300 digits and is
quadratic in their length)."""


@dataclass(frozen=True)
class IndexTokens:
    """The spelling of region index tokens, ``<{prefix}{K}>``: ``"region"`` (VLM-FO1,
    :data:`REGION_INDEX_TOKENS`) or ``"obj"`` (VLX-Seek 1.5, spec vlx-seek-1.5 §1.5).

    Attributes:
        prefix: letters between ``<`` and the index.
        pattern: matches one token, the index (ASCII digits) as group 1.
        count_pattern: an integer that is not the digits of a (cut-off) ``<{prefix}K``.

    Raises:
        ValueError: ``prefix`` is not ASCII letters (a programming error, not a request's).
    """

    prefix: str
    pattern: "re.Pattern" = field(init=False, repr=False, compare=False)
    count_pattern: "re.Pattern" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.prefix.isascii() and self.prefix.isalpha()):
            raise ValueError(f"index token prefix must be ASCII letters, got {self.prefix!r}")
        # ASCII digits only: "\d" also matches e.g. Arabic-Indic digits, which int() reads as
        # numbers, so "<region٣>" would refer to region 3 (the tokenizer's tokens are ASCII)
        object.__setattr__(self, "pattern", re.compile(rf"<{self.prefix}([0-9]+)>"))
        object.__setattr__(self, "count_pattern",
                           re.compile(rf"(?<!{self.prefix})[0-9]+"))

    def token(self, index: int) -> str:
        """The token string of ``index`` (no range check: the tokenizer decides what exists)."""
        return f"<{self.prefix}{int(index)}>"


REGION_INDEX_TOKENS = IndexTokens("region")
"""VLM-FO1's ``<regionK>``, the default of every parser function."""


def _to_int(digits: str) -> int:
    """``int(digits)`` for a run of decimal digits, huge runs capped (never raises)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS


class _NextTag:
    """Position of the next occurrence of ``tag`` at or after a position, for positions asked in
    non-decreasing order: every character is scanned at most once in all (linear time)."""

    def __init__(self, text: str, tag: str):
        self.text, self.tag, self.asked, self.found = text, tag, 0, text.find(tag)

    def at_or_after(self, pos: int) -> int:
        """Smallest index ``≥ pos`` where ``tag`` starts, or -1."""
        if not (self.asked <= pos and (self.found < 0 or self.found >= pos)):
            self.asked, self.found = pos, self.text.find(self.tag, pos)
        return self.found


def _grounded_blocks(text: str) -> Iterator[Tuple[int, int, str, str]]:
    """``(start, end, label, objects part)`` of each grounded block, left to right, in linear
    time; the same blocks as the regex ``<ground>((?:(?!</?ground>).)*?)</ground>\\s*<(objects?)>
    (.*?)</\\2>`` (DOTALL) finds with ``finditer``, which is quadratic on unclosed blocks.

    A label never spans another ``<ground>`` tag: in ``<ground>a</ground>\\n<ground>b</ground>
    <objects>…`` the block is ``b`` (the reference, whose ``.`` stops at the newline, reads it so
    too).
    """
    opens, closes = _NextTag(text, "<ground>"), _NextTag(text, "</ground>")
    ends = {"objects": _NextTag(text, "</objects>"), "object": _NextTag(text, "</object>")}
    pos = 0
    while True:
        start = opens.at_or_after(pos)
        if start < 0:
            return
        label_start = start + len("<ground>")
        pos = label_start  # the next try (no "<ground>" starts inside this one)
        close = closes.at_or_after(label_start)
        if close < 0:
            return  # no later <ground> has a </ground> either
        if 0 <= opens.at_or_after(label_start) < close:
            continue  # the label would span another <ground>
        after = _SPACE.match(text, close + len("</ground>")).end()
        for spelling in ("objects", "object"):
            if text.startswith(f"<{spelling}>", after):
                inner_start = after + len(spelling) + 2
                inner_end = ends[spelling].at_or_after(inner_start)
                if inner_end >= 0:
                    end = inner_end + len(spelling) + 3
                    yield start, end, text[label_start:close], text[inner_start:inner_end]
                    pos = end
                break


@dataclass
class ParsedAnswer:
    """Result of :func:`parse_answer`.

    Attributes:
        groundings: phrases with their valid region indices (sorted, unique), in answer order;
            a phrase that occurs twice is merged (set union, as the reference); a phrase whose
            indices were all out of range keeps an empty list. Rejected phrases are not here
            unless the same phrase also has valid regions in another block (regions win).
        rejected: phrases answered absent (``<objects>None</objects>``) and nowhere found with a
            valid region, unique, in answer order.
        dropped_indices: indices ≥ ``num_regions`` that were referenced and ignored.
        mentioned_indices: the valid referred indices in answer order (each once, at its first
            mention); ``groundings`` sort each phrase's indices instead.
        malformed: fragments that looked like markup but did not parse (e.g. an unclosed
            ``<ground>``), for reporting.
    """

    groundings: List[Grounding] = field(default_factory=list)
    rejected: List[str] = field(default_factory=list)
    dropped_indices: List[int] = field(default_factory=list)
    malformed: List[str] = field(default_factory=list)
    mentioned_indices: List[int] = field(default_factory=list)

    @property
    def region_indices(self) -> List[int]:
        """All referred valid indices, unique, in grounding order (phrases in first-mention
        order, each phrase's indices sorted); :attr:`mentioned_indices` keeps answer order."""
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


def parse_answer(text: str, num_regions: int,
                 index_tokens: IndexTokens = REGION_INDEX_TOKENS) -> ParsedAnswer:
    """Parse an answer string into groundings.

    Args:
        text: the decoded answer (special tokens kept).
        num_regions: number of regions shown to the model; valid indices are ``[0, num_regions)``.
        index_tokens: the spelling of the index tokens (``<regionK>`` by default); bare
            references are labelled with this spelling too.

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
    rejected: Dict[str, None] = {}  # insertion-ordered set
    mentioned: Dict[int, None] = {}  # insertion-ordered set

    def add(phrase: str, indices: List[int]) -> None:
        valid = []
        for idx in indices:
            if 0 <= idx < num_regions:
                valid.append(idx)
                mentioned.setdefault(idx, None)
            else:
                parsed.dropped_indices.append(idx)
        if phrase not in merged:
            merged[phrase] = set()
            order.append(phrase)
        merged[phrase].update(valid)

    remainder_parts = []
    last = 0
    for start, end, label, inner in _grounded_blocks(text):
        remainder_parts.append(text[last:start])
        last = end
        phrase = label.strip()
        if inner.strip() == REJECTION_TEXT:
            rejected.setdefault(phrase, None)
            if phrase not in merged:
                merged[phrase] = set()
                order.append(phrase)
        else:
            add(phrase, [_to_int(i) for i in index_tokens.pattern.findall(inner)])
    remainder_parts.append(text[last:])
    remainder = "".join(remainder_parts)

    # Bare references count only when there is no grounded block (as the reference demos);
    # otherwise they are mentions, e.g. inside <think>.
    bare = [] if order else [_to_int(i) for i in index_tokens.pattern.findall(remainder)]
    for idx in bare:
        if 0 <= idx < num_regions:
            add(index_tokens.token(idx), [idx])
        else:
            parsed.dropped_indices.append(idx)
    parsed.mentioned_indices = list(mentioned)
    for tag in ("<ground>", "<objects>", "<object>"):
        if tag in remainder:
            parsed.malformed.append(tag)

    found = {p for p in order if merged[p]}
    parsed.rejected = [p for p in rejected if p not in found]
    absent = set(parsed.rejected)
    parsed.groundings = [Grounding(p, sorted(merged[p])) for p in order if p not in absent]
    return parsed


def read_count(text: str, index_tokens: IndexTokens = REGION_INDEX_TOKENS) -> Optional[int]:
    """The counting answer's number (spec §5.2): first integer after removing region tags.

    Args:
        text: the decoded answer.
        index_tokens: the spelling of the index tokens that are removed first.

    Returns:
        The integer, or ``None`` when the answer holds none (e.g. ``…</objects>`` cut off, or a
        rejection block without the ``0`` after it).
    """
    cleaned = index_tokens.pattern.sub("", text)
    match = index_tokens.count_pattern.search(cleaned)
    return _to_int(match.group(0)) if match else None


def extract_count(text: str, index_tokens: IndexTokens = REGION_INDEX_TOKENS) -> int:
    """:func:`read_count`, but 0 when the answer holds no integer (as the reference evaluation
    does; use :func:`read_count` to tell that apart from a written ``0``)."""
    count = read_count(text, index_tokens)
    return 0 if count is None else count


def extract_reasoning(text: str) -> tuple:
    """Split a ``reason`` answer into ``(thinking, answer_text)``; missing parts are ``None``."""
    return _between(text, "<think>", "</think>"), _between(text, "<answer>", "</answer>")


def _between(text: str, open_tag: str, close_tag: str) -> Optional[str]:
    """Stripped text between the first ``open_tag`` and the next ``close_tag`` (linear time)."""
    start = text.find(open_tag)
    end = -1 if start < 0 else text.find(close_tag, start + len(open_tag))
    return None if end < 0 else text[start + len(open_tag):end].strip()


def first_region_index(parsed: ParsedAnswer) -> Optional[int]:
    """The first referred valid region in answer order (REC evaluation takes the first box),
    or ``None``: ``<ground>x</ground><objects><region2><region0></objects>`` gives 2.
    Out-of-range indices refer to no box and are skipped (they are in ``dropped_indices``)."""
    indices = parsed.mentioned_indices
    return indices[0] if indices else None


def grounded_blocks(text: str) -> List[Tuple[str, str]]:
    """``(label, objects part)`` of each grounded block that :func:`parse_answer` reads, in
    answer order, both unstripped: whitespace or newlines between the tags and the
    ``<object>`` spelling are accepted, a label never spans another ``<ground>`` tag.

    The evaluation's lenient COCO parse uses these blocks (:mod:`vlxseek_core.evaluation.coco`).
    Never raises for a ``str``.
    """
    return [(label, inner) for _, _, label, inner in _grounded_blocks(text)]
