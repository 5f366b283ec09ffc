"""Task templates and prompt construction (spec §3.2, §3.4).

A prompt is built from *parts*: plain strings (which may contain untrusted user text),
:class:`TemplateText` (the reference templates) and :class:`TrustedToken` objects that the
pipeline itself places (region references). Plain text is tokenized with
``split_special_tokens=True`` so that user text that spells ``<region3>`` or ``<|im_end|>`` can
never become a control token; trusted tokens become their single id, and so do the added tokens
written in a template (the reasoning template's ``<think>``/``</think>``), as in the reference.
Because added tokens always split the reference's text into separate BPE chunks, this gives the
reference's ids for every benign query.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import InvalidRequestError
from .tokens import (IM_END, IM_START, IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER_ID,
                     MAX_REGIONS, REGION_FEATURE_PLACEHOLDER, REGION_FEATURE_PLACEHOLDER_ID,
                     SYSTEM_PROMPT, VISION_END, VISION_START, region_token)

# Verbatim reference templates (spec §3.4); "{}" is the slot.
OD_TEMPLATE = "Please detect {} in this image. Answer the question with object indexes."
REC_TEMPLATE = OD_TEMPLATE
OD_COUNTING_TEMPLATE = (
    "How many {} are there in this image? Count each instance of the target object. "
    "Locate them with object indexes and then answer the question with the number of objects.")
REGION_OCR_TEMPLATE = "Please provide the ocr results of {} in the image."
BRIEF_REGION_CAPTION_TEMPLATE = "Provide a brief description for {}."
DETAILED_REGION_CAPTION_TEMPLATE = "Provide a detailed description for {}."
GROUNDING_TEMPLATE = ("Briefly describe this image and detect all mentioned objects. "
                      "Answer with grounded object indexes.")
VISUAL_PROMPT_OD_TEMPLATE = (
    "Using the provided object {} as a reference, identify all other objects of the same "
    "category in this image. Respond with object indexes.")
VISUAL_REGION_REASONING_TEMPLATE = (
    "First thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer "
    "here </answer>. Please give a detailed reasoning process process and provide image regions "
    "that can help you answer the question better. {}")
OD_ALL_TEMPLATE = ("Please identify every object in the image and provide their labels along "
                   "with their indexes.")


@dataclass(frozen=True)
class TrustedToken:
    """A special token placed by the pipeline (never derived from user text)."""

    text: str


class TemplateText(str):
    """Template text written by this project: added tokens in it (``<think>``) are honoured."""


PromptPart = Union[str, TemplateText, TrustedToken]


@dataclass(frozen=True)
class TaskSpec:
    """How a task builds its text.

    Attributes:
        template: the reference template.
        slot: what fills ``{}``: ``"query"`` (the user text), ``"regions"`` (region tokens of
            the chosen regions), ``"categories"`` (``"; "``-joined category list) or ``None``.
        needs_query: the user text is required.
        needs_regions: region indices (or user boxes) are required.
        region_answer: the answer is a list of region references (constrained decoding applies).
        runs_without_regions: the task may be asked about the image alone, with no candidate
            regions: the reference prompt then has no region line (spec §3.2, "If there are no
            boxes ..."), as for the general VQA data that training stage 2 mixes in. Only
            ``vqa``: region tasks need regions to refer to, region-answer tasks need regions
            to answer with, and the ``ground`` and ``reason`` templates ask for region indexes
            in the answer.
    """

    template: str
    slot: Optional[str]
    needs_query: bool
    needs_regions: bool
    region_answer: bool
    runs_without_regions: bool = False


TASKS: Dict[str, TaskSpec] = {
    "detect": TaskSpec(OD_TEMPLATE, "categories", True, False, True),
    "refer": TaskSpec(REC_TEMPLATE, "query", True, False, True),
    "count": TaskSpec(OD_COUNTING_TEMPLATE, "query", True, False, True),
    "caption": TaskSpec(BRIEF_REGION_CAPTION_TEMPLATE, "regions", False, True, False),
    "caption_detailed": TaskSpec(DETAILED_REGION_CAPTION_TEMPLATE, "regions", False, True, False),
    "ocr": TaskSpec(REGION_OCR_TEMPLATE, "regions", False, True, False),
    "vqa": TaskSpec("{}", "query", True, False, False, runs_without_regions=True),
    "ground": TaskSpec(GROUNDING_TEMPLATE, None, False, False, False),
    "visual_prompt": TaskSpec(VISUAL_PROMPT_OD_TEMPLATE, "regions", False, True, True),
    "reason": TaskSpec(VISUAL_REGION_REASONING_TEMPLATE, "query", True, False, False),
    "detect_all": TaskSpec(OD_ALL_TEMPLATE, None, False, False, True),
}
"""Task name → spec. ``vqa`` and ``reason`` append region tokens when regions are given;
``vqa`` also runs without regions (:attr:`TaskSpec.runs_without_regions`)."""

MAX_QUERY_CHARS = 4096


def normalize_categories(query: str) -> str:
    """Join categories the reference way: ``"a; b; c"`` (``;``-separated input, stripped)."""
    cats = [c.strip() for c in query.split(";")]
    return "; ".join(c for c in cats if c)


def task_parts(task: str, query: str = "",
               region_indices: Sequence[int] = ()) -> List[PromptPart]:
    """The task text as prompt parts (spec §3.4).

    Args:
        task: a key of :data:`TASKS` (empty string means ``detect``).
        query: the user text (categories, expression, question).
        region_indices: regions that region tasks refer to (indices into the proposals).

    Raises:
        InvalidRequestError: unknown task, missing or too long query, missing regions, or a
            region index that is not an integer in [0, 100).
    """
    task = task or "detect"
    if not isinstance(task, str) or task not in TASKS:
        raise InvalidRequestError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    spec = TASKS[task]
    if not isinstance(query, str):
        raise InvalidRequestError("query must be a string")
    query = query.strip()
    if spec.needs_query and not query:
        raise InvalidRequestError(f"task {task!r} needs a non-empty query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequestError(
            f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    if spec.needs_regions and not region_indices:
        raise InvalidRequestError(f"task {task!r} needs regions (user boxes or region indices)")
    region_tokens = [TrustedToken(region_token(i)) for i in _region_indices(region_indices)]

    head, _, tail = (TemplateText(t) for t in spec.template.partition("{}"))
    if spec.slot is None:
        return [TemplateText(spec.template)]
    if spec.slot == "regions":
        return [head, *region_tokens, tail]
    filler = normalize_categories(query) if spec.slot == "categories" else query
    parts: List[PromptPart] = [head, filler, tail]
    if region_tokens:  # vqa / reason / refer about given regions: append references (gradio).
        parts += [" ", *region_tokens]
    return parts


def _region_indices(values) -> List[int]:
    """``values`` as ints in [0, MAX_REGIONS) (numpy integers too; not bools, floats or
    strings), else InvalidRequestError."""
    def refuse():
        return InvalidRequestError(f"region indices must be integers in [0, {MAX_REGIONS}), "
                                   f"got {values!r:.80}")

    if isinstance(values, (str, bytes)):
        raise refuse()
    try:
        items = list(values)
    except TypeError:
        raise refuse() from None
    indices = []
    for value in items:
        if isinstance(value, bool):
            raise refuse()
        try:
            index = operator.index(value)
        except TypeError:
            raise refuse() from None
        if not 0 <= index < MAX_REGIONS:
            raise refuse()
        indices.append(index)
    return indices


def parts_to_text(parts: Sequence[PromptPart]) -> str:
    """The plain string of prompt parts (as the model would read it)."""
    return "".join(p.text if isinstance(p, TrustedToken) else p for p in parts)


def render_prompt(task_text: str, num_regions: int, system: Optional[bool] = None) -> str:
    """The full reference prompt string with ``<image>``/``<regionfeat>`` placeholders (§3.2).

    ``system=None`` applies the reference rule: the system turn is added unless the substring
    ``system`` occurs in the task text (spec §7.11). ``num_regions=0`` omits the region line
    with its newline: ``<|vision_end|>\n{task_text}`` (spec §3.2, the reference's
    ``make_message_context`` adds ``<regionK><regionfeat>…\n`` only for a non-empty list).
    """
    if system is None:
        system = "system" not in task_text
    sys_turn = f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n" if system else ""
    region_line = "".join(f"{region_token(k)}{REGION_FEATURE_PLACEHOLDER}"
                          for k in range(num_regions))
    region_line = region_line + "\n" if num_regions else ""
    return (f"{sys_turn}{IM_START}user\n{VISION_START}{IMAGE_PLACEHOLDER}{VISION_END}\n"
            f"{region_line}{task_text}{IM_END}\n{IM_START}assistant\n")


class PromptTokenizer:
    """Turns prompt parts into input ids with image (−200) and region (−300) placeholders."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids
        self.im_start, self.im_end = ids(IM_START), ids(IM_END)
        self.vision_start, self.vision_end = ids(VISION_START), ids(VISION_END)
        self._region_ids = {}
        added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
        # splits template text at the tokenizer's added tokens (kept, as odd items)
        self._added_split = (re.compile("(" + "|".join(map(re.escape, added)) + ")")
                             if added else None)

    def text_ids(self, text: str) -> List[int]:
        """Ids of untrusted text: special-token strings are split into ordinary tokens."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False,
                                   split_special_tokens=True)["input_ids"])

    def token_id(self, token: str) -> int:
        """Id of a trusted special token.

        Raises:
            InvalidRequestError: the tokenizer does not know it.
        """
        if token not in self._region_ids:
            idx = self.tokenizer.convert_tokens_to_ids(token)
            if idx is None or idx == self.tokenizer.unk_token_id:
                raise InvalidRequestError(f"tokenizer has no token {token!r}")
            self._region_ids[token] = idx
        return self._region_ids[token]

    def _pieces(self, part: PromptPart) -> Iterator[Tuple[str, bool]]:
        """``(text, is_special_token)`` pieces of one prompt part."""
        if isinstance(part, TrustedToken):
            yield part.text, True
        elif isinstance(part, TemplateText) and self._added_split is not None:
            for i, piece in enumerate(self._added_split.split(part)):
                yield piece, i % 2 == 1  # re.split puts the captured tokens at odd places
        else:
            yield part, False

    def parts_ids(self, parts: Sequence[PromptPart]) -> List[int]:
        """Ids of prompt parts; the text between two special tokens is tokenized as one chunk."""
        out: List[int] = []
        buffer = ""
        for part in parts:
            for text, special in self._pieces(part):
                if special:
                    out += self.text_ids(buffer) + [self.token_id(text)]
                    buffer = ""
                else:
                    buffer += text
        return out + self.text_ids(buffer)

    def build_prefix(self, num_regions: int, system: bool) -> List[int]:
        """Ids up to and including the newline before the task text; depend only on the frame.

        With ``num_regions=0`` there is no region line (spec §3.2): the prefix ends
        ``<|vision_start|>, −200, <|vision_end|>, "\n"`` and the task text follows.

        The reference tokenizes ``"\n" + text`` as one chunk; the Qwen2 pre-tokenizer always
        splits a single newline from a following non-space character, and task texts never
        start with whitespace, so prefix + :meth:`build_suffix` equals the reference's ids.
        """
        ids: List[int] = []
        if system:
            ids += [self.im_start] + self.text_ids(f"system\n{SYSTEM_PROMPT}") + [self.im_end]
            ids += self.text_ids("\n")
        ids += [self.im_start] + self.text_ids("user\n") + [self.vision_start]
        ids += [IMAGE_PLACEHOLDER_ID, self.vision_end]
        if num_regions:
            ids += self.text_ids("\n")
            for k in range(num_regions):
                ids += [self.token_id(region_token(k)), REGION_FEATURE_PLACEHOLDER_ID]
        return ids + self.text_ids("\n")

    def build_suffix(self, parts: Sequence[PromptPart]) -> List[int]:
        """Ids of the task text, the end of the user turn and the assistant header."""
        return (self.parts_ids(parts) + [self.im_end] + self.text_ids("\n") + [self.im_start]
                + self.text_ids("assistant\n"))

    @staticmethod
    def wants_system_turn(parts: Sequence[PromptPart]) -> bool:
        """Reference rule (spec §7.11): no system turn if the text contains ``system``."""
        return "system" not in parts_to_text(parts)

    def build(self, parts: Sequence[PromptPart], num_regions: int,
              system: Optional[bool] = None) -> List[int]:
        """Input ids of the full prompt, equal to the reference's (spec §3.2).

        Returns:
            list of int; −200 marks the image, one −300 follows each ``<regionK>`` token.
        """
        if system is None:
            system = self.wants_system_turn(parts)
        return self.build_prefix(num_regions, system) + self.build_suffix(parts)
