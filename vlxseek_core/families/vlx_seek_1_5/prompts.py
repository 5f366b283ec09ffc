"""VLX-Seek 1.5 prompts, task templates, placeholder expansion, generation defaults and answers
(spec vlx-seek-1.5 §1.5, §1.6, §4).

Flow of one request::

    request = prepare_request(task, query, boxes, (W, H), config.mm_bbox_order_mode)
    #   = prepare_boxes (box_order.py, §4.4) + task_question + question_to_model + render_prompt
    ids = tokenize_prompt(request.prompt, tokenizer)                       # −200 / −300, §1.6
    expanded = expand_placeholders(ids, tokenizer, image_grid_thw, len(request.order))
    ... generate(expanded.input_ids, boxes = request.order.model_boxes, GENERATION[...]) ...
    answer = read_answer(completion_text, request.order)        # answers.py, caller indices, §4.5

Differences from VLM-FO1's :mod:`vlxseek_core.prompts`: no system turn, ``<objK>`` instead of
``<regionK>``, ``<objfeat>`` instead of ``<regionfeat>``, six tasks with English and Chinese
templates, boxes in a model-side order. The prompt is tokenized like the reference
(:mod:`.expansion`: special-token strings in the text become their tokens, so a question may name
boxes as ``<objN>``); the structural placeholders and chat-control tokens are refused in caller
text instead (:func:`task_question`): one of them there would shift the image or object features
or end the user turn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from ...errors import InvalidRequestError
from ...prompts import MAX_QUERY_CHARS, normalize_categories
from ...tokens import IM_END, IM_START, IMAGE_PLACEHOLDER, VISION_END, VISION_START
from ... import validation
# the whole prompt/answer layer is importable from this module
from .answers import Answer, read_answer, result_bbox_list  # noqa: F401
from .box_order import OBJ_TOKENS, BoxOrder, prepare_boxes
from .expansion import (OBJ_FEATURE_PLACEHOLDER, OBJ_FEATURE_PLACEHOLDER_ID,  # noqa: F401
                        ExpandedPrompt, expand_placeholders, object_token_count,
                        tokenize_prompt)

# ----------------------------------------------------------------------------- templates (§4.2)

_REASONING_EN = (
    "First thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer "
    "here </answer>.\nFor the reasoning process, analyze each object in the image related to the "
    "question and identify the correct objects that correspond to the target label.\nFind the "
    "following in this picture: {}.")
_REASONING_ZH = (
    "首先思考思维过程，然后向用户提供答案。思维过程和答案分别用 <think>   </think> 和 "
    "<answer>   </answer> 标签括起来，即 <think> 在这里写推理过程 </think><answer> 在这里写答案 "
    "</answer>。 对于推理过程，检查图像中与问题相关的所有对象，并确定符合目标标签的对象。在图像中识别{}。")


@dataclass(frozen=True)
class TaskTemplate:
    """One VLX-Seek 1.5 task (spec §4.2).

    Attributes:
        en, zh: the verbatim templates, one ``{}`` slot each.
        slot: ``"categories"`` (a list joined with ``"; "``; a ``;``-separated string is
            normalised), ``"query"`` (the text as given; a list is joined with ``"; "``),
            ``"regions"`` (``<objI>`` of the requested caller indices) or ``"question"``
            (the free VQA question, no template).
        needs_boxes: the prompt must carry at least one box (all tasks but ``vqa``).
        region_answer: the answer is ``<ground>…</ground><objects>…`` blocks (constrained
            decoding applies); ``counting`` adds the number as text.
    """

    en: str
    zh: str
    slot: str
    needs_boxes: bool = True
    region_answer: bool = False


TEMPLATES: Dict[str, TaskTemplate] = {
    "detection": TaskTemplate("Detect all the instances of: {}.", "识别每个：{}。",
                              "categories", region_answer=True),
    "grounding_single": TaskTemplate("Detect a single instance of: {}.", "检测单个目标：{}。",
                                     "query", region_answer=True),
    "counting": TaskTemplate(
        "Find and count all {} in the image. Provide the object indexes along with the total "
        "number.", "在图片中识别并计数： {}。返回目标数量以及索引。", "query", region_answer=True),
    "brief_region_caption": TaskTemplate("Give a brief description of {}.",
                                         "给出这些区域的简要描述：{}。", "regions"),
    "region_ocr": TaskTemplate("Please provide the ocr results of {} in the image.",
                               "请提供该区域内的 OCR 结果：{}。", "regions"),
    "reasoning_detection": TaskTemplate(_REASONING_EN, _REASONING_ZH, "query"),
    "vqa": TaskTemplate("{}", "{}", "question", needs_boxes=False),
}
"""VLX-Seek 1.5 task name → template (spec §4.2)."""

PROJECT_TASKS: Dict[str, str] = {
    "detect": "detection", "refer": "grounding_single", "count": "counting",
    "caption": "brief_region_caption", "ocr": "region_ocr", "reason": "reasoning_detection",
    "vqa": "vqa",
}
"""This project's task names (:data:`vlxseek_core.prompts.TASKS`) → VLX-Seek 1.5 task names.
FO1 tasks missing here (``caption_detailed``, ``ground``, ``visual_prompt``, ``detect_all``)
have no 1.5 template."""

LANGUAGES = ("en", "zh")

# Caller text must not hold the structural placeholders or chat-control tokens: an extra
# <image>/<objfeat> would misplace the image or object features, <|im_end|> would end the turn.
_CONTROL = re.compile(r"<\|[^<>|]*\|>|<image>|<objfeat>")


def family_task(task: str) -> str:
    """The VLX-Seek 1.5 task name of a project task name (or of a 1.5 name itself).

    ``""`` means ``detect``, as in the FO1 pipeline.

    Raises:
        InvalidRequestError: the task has no VLX-Seek 1.5 template; the message names the task
            and the supported ones.
    """
    task = task or "detect"
    if not isinstance(task, str):
        raise InvalidRequestError(f"task must be a string, got {type(task).__name__}")
    if task in TEMPLATES:
        return task
    if task in PROJECT_TASKS:
        return PROJECT_TASKS[task]
    supported = ", ".join(f"{p} ({f})" for p, f in PROJECT_TASKS.items())
    raise InvalidRequestError(f"task {task!r} is not supported by the VLX-Seek 1.5 family; "
                              f"supported tasks: {supported}")


def _check_text(text: str, name: str) -> str:
    """Stripped caller text, refused when empty, too long or holding control tokens."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"{name} must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise InvalidRequestError(f"{name} must be non-empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidRequestError(
            f"{name} is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidRequestError(f"{name} holds the control token {bad.group(0)!r}")
    return text


def _slot_text(query: Any, slot: str) -> str:
    """The text of a ``categories``/``query``/``question`` slot."""
    if isinstance(query, (list, tuple)):  # a list of categories: "; "-joined (spec §4.2)
        items = [_check_text(q, f"query[{i}]") for i, q in enumerate(query)]
        if not items:
            raise InvalidRequestError("query must name at least one category")
        return _check_text("; ".join(items), "query")
    text = _check_text(query, "query")
    return _check_text(normalize_categories(text), "query") if slot == "categories" else text


def task_question(task: str, query: Any = "", region_indices: Sequence[int] = (),
                  num_boxes: Optional[int] = None, language: str = "en") -> str:
    """The question text of a task, with caller-side ``<objI>`` (spec §4.2).

    Args:
        task: a project task name (:data:`PROJECT_TASKS`) or a VLX-Seek 1.5 task name.
        query: categories (``str`` or list of ``str``), expression or free question; unused by
            the region tasks.
        region_indices: caller box indices that ``brief_region_caption``/``region_ocr`` describe
            (at least one); refused for the other tasks (a VQA question names boxes itself,
            ``What is <obj2> holding?``).
        num_boxes: the number of caller boxes; when given, region indices must be below it and
            tasks other than ``vqa`` need at least one box.
        language: ``"en"`` or ``"zh"``.

    Returns:
        The question; apply :meth:`BoxOrder.question_to_model` before :func:`render_prompt`.

    Raises:
        InvalidRequestError: unsupported task or language, empty/too long query, control tokens
            (``<image>``, ``<objfeat>``, ``<|…|>``) in it, missing/out-of-range region indices,
            region indices for a non-region task, no boxes for a task that needs them.
    """
    name = family_task(task)
    spec = TEMPLATES[name]
    if language not in LANGUAGES:
        raise InvalidRequestError(f"language must be one of {LANGUAGES}, got {language!r}")
    if num_boxes is not None and spec.needs_boxes and num_boxes < 1:
        raise InvalidRequestError(f"task {task!r} ({name}) needs at least one box")
    indices = validation.region_indices(region_indices) or []
    if spec.slot != "regions" and indices:
        raise InvalidRequestError(f"region_indices are for brief_region_caption/region_ocr; "
                                  f"task {task!r} ({name}) names boxes as <objN> in the query")
    if spec.slot == "regions":
        if not indices:
            raise InvalidRequestError(f"task {task!r} ({name}) needs region_indices")
        if num_boxes is not None:
            validation.indices_in_range(indices, num_boxes)
        filler = "".join(OBJ_TOKENS.token(i) for i in indices)
    else:
        filler = _slot_text(query, spec.slot)
    template = spec.en if language == "en" else spec.zh
    return template.replace("{}", filler, 1)


# ----------------------------------------------------------------------------- prompt (§4.1, §1.6)

def render_prompt(question: str, num_boxes: int) -> str:
    """The full prompt string with ``<image>``/``<objfeat>`` placeholders (spec §4.1).

    No system turn, nothing pre-filled for the assistant. With boxes the user turn has the line
    ``<obj0><objfeat>…<obj{N-1}><objfeat>`` (model-side indices) between the image and the
    question; without boxes (VQA) the question follows the image line directly.
    """
    box_line = "".join(f"{OBJ_TOKENS.token(k)}{OBJ_FEATURE_PLACEHOLDER}"
                       for k in range(num_boxes))
    box_line = box_line + "\n" if num_boxes else ""
    return (f"{IM_START}user\n{VISION_START}{IMAGE_PLACEHOLDER}{VISION_END}\n"
            f"{box_line}{question}{IM_END}\n{IM_START}assistant\n")


# ----------------------------------------------------------------------------- generation (§4.3)

@dataclass(frozen=True)
class GenerationDefaults:
    """Decoding settings of one entry point (spec §4.3); stop at ``<|im_end|>``.

    Top-k and the eos ids come from the checkpoint's ``generation_config.json`` (not here).
    """

    temperature: float
    max_new_tokens: int
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: str = IM_END

    @property
    def do_sample(self) -> bool:
        """Sampling when ``temperature > 0``, greedy otherwise (reference rule)."""
        return self.temperature > 0

    def generate_kwargs(self) -> Dict[str, Any]:
        """``generate`` keywords: ``temperature``/``top_p`` only when sampling (reference)."""
        kwargs: Dict[str, Any] = {"do_sample": self.do_sample,
                                  "max_new_tokens": self.max_new_tokens,
                                  "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs


GENERATION: Dict[str, GenerationDefaults] = {
    "cli": GenerationDefaults(temperature=0.0, max_new_tokens=2048),
    "predict": GenerationDefaults(temperature=0.2, max_new_tokens=512),
}
"""The reference's defaults: the CLI decodes greedily (its docs recommend temperature 0 for all
detection tasks), the Python ``predict`` samples at temperature 0.2 with 512 new tokens."""


# ----------------------------------------------------------------------------- one request

@dataclass(frozen=True)
class Request:
    """A prepared VLX-Seek 1.5 request.

    Attributes:
        task: the VLX-Seek 1.5 task name.
        order: the validated caller boxes and their model-side order.
        question: the question with model-side ``<objM>`` (caller indices remapped).
        prompt: :func:`render_prompt` of it, with ``<image>``/``<objfeat>`` placeholders.
    """

    task: str
    order: BoxOrder
    question: str
    prompt: str


def prepare_request(task: str, query: Any = "", boxes: Any = None,
                    image_size: Sequence[float] = (1, 1), order_mode: str = "none",
                    region_indices: Sequence[int] = (), language: str = "en",
                    max_boxes: Optional[int] = None) -> Request:
    """Boxes, question and prompt of one request (spec §4.1, §4.2, §4.4).

    Args:
        task, query, region_indices, language: as :func:`task_question` (caller indices).
        boxes: caller boxes ``[N, 4]`` xyxy pixels of the original image, or ``None``.
        image_size: ``(W, H)`` of the original image in pixels (boxes are clipped to it).
        order_mode: the checkpoint's ``mm_bbox_order_mode``.
        max_boxes: the tokenizer's ``<objK>`` count (:func:`object_token_count`), or ``None``.

    Raises:
        InvalidRequestError: as :func:`~.box_order.prepare_boxes` and :func:`task_question`.
    """
    order = prepare_boxes(boxes, image_size, order_mode, max_boxes=max_boxes)
    question = task_question(task, query, region_indices, len(order), language)
    model_question = order.question_to_model(question)
    return Request(family_task(task), order, model_question,
                   render_prompt(model_question, len(order)))
