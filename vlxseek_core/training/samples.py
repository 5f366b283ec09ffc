"""Training samples: a record → prompt ids, answer labels and preprocessed image (issue 9 §2).

The prompt of a training sample is built by the same :class:`~vlxseek_core.prompts.PromptTokenizer`
and :func:`~vlxseek_core.prompts.task_parts` calls as inference (``VLXSeek.answer``), so the ids
are equal id for id. The loss covers the answer and its closing ``<|im_end|>`` only: prompt,
image and region rows are masked with :data:`IGNORE_INDEX`. A record without boxes (general
VQA, spec §3.2) has no region line in its prompt and no region rows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidRequestError
from ..preprocessing import ImagePreprocessor, PreparedImage
from ..prompts import TASKS, PromptTokenizer, TemplateText, task_parts
from ..tokens import IMAGE_PLACEHOLDER, MAX_REGIONS, VLM_FO1_ADDED_TOKENS, region_token
from .arguments import LOSS_ON
from .records import REGION_REF, box_problem, check_answer_markup
from .text_regions import check_text_region_record, is_text_region_record, text_region_prompt_ids

IGNORE_INDEX = -100
"""Label of positions without loss (torch ``cross_entropy``'s default ``ignore_index``)."""


def has_region_choice(record: dict) -> bool:
    """Whether a record's answer chooses regions (a ``<regionK>``, or ``<objects>None``): the
    records that ``loss_on="regions"`` or ``"choices"`` can train on."""
    try:
        answer = _turn(record, "gpt")
    except InvalidRequestError:
        return True  # malformed: let the builder say why
    return bool(REGION_REF.search(answer)) or "<objects>None</objects>" in answer


def record_prompt_parts(record: dict) -> list:
    """The task text of a record as prompt parts, exactly as inference builds them.

    Records with ``task`` (vlxseek extension) use :func:`task_parts` with their ``query`` and
    ``region_indices``; records without it use the human turn's text (minus the leading
    ``<image>`` line) as template text, so added tokens written in it become single ids.

    Raises:
        InvalidRequestError: unknown task, missing query, malformed conversations.
    """
    if record.get("task"):
        return task_parts(record["task"], record.get("query", ""),
                          record.get("region_indices") or ())
    human = _turn(record, "human")
    text = human.replace(IMAGE_PLACEHOLDER, "", 1).lstrip("\n")
    return [TemplateText(text)]


def _boxes(record: dict) -> np.ndarray:
    """The record's ``bbox_list`` as float32 ``[N, 4]`` (``[0, 4]`` when absent)."""
    return np.asarray(record.get("bbox_list") or [], dtype=np.float32).reshape(-1, 4)


def check_boxless(record: dict, answer: str) -> None:
    """A record without boxes must be one the model can answer from the image alone: its
    ``task`` runs without regions (:attr:`~vlxseek_core.prompts.TaskSpec.runs_without_regions`,
    i.e. ``vqa``) or, for a plain LLaVA-format record without ``task``, its answer refers to
    no ``<regionK>``.

    Raises:
        InvalidRequestError: naming the record id and ``bbox_list``.
    """
    task = record.get("task")
    if task:
        spec = TASKS.get(task)
        ok = spec is not None and spec.runs_without_regions
        why = f"task {task!r} needs at least one box"
    else:
        ok = not REGION_REF.search(answer)
        why = "the answer refers to regions but there are no boxes"
    if not ok:
        raise InvalidRequestError(f"record {record.get('id')!r}: field 'bbox_list': {why}")


def check_record(record: dict) -> None:
    """The checks of a training record that need neither its image nor the tokenizer, so that
    a whole data set is checked before the first step (``vlxseek train``) rather than failing
    hours into a run: a ``gpt`` turn whose markup is only markup
    (:func:`~.records.check_answer_markup`); for an image record, ``bbox_list`` a list of at
    most 100 boxes, each 4 finite numbers with ``x2 > x1`` and ``y2 > y1``; ``score_list``
    (optional) one finite number per box; every ``<regionK>`` of the turns and every
    ``region_indices`` entry below the number of boxes; no boxes only where
    :func:`check_boxless` allows it.
    Text-region records are checked by :func:`~.text_regions.check_text_region_record`.

    Raises:
        InvalidRequestError: naming the record id and the field.
    """
    answer = _turn(record, "gpt")
    rid = record.get("id")
    if not isinstance(record.get("task", ""), str):
        raise InvalidRequestError(f"record {rid!r}: field 'task': must be a task name, got "
                                  f"{type(record['task']).__name__}")
    check_answer_markup(answer, rid)
    if is_text_region_record(record):
        check_text_region_record(record)
        return
    boxes = record.get("bbox_list") or []
    if not isinstance(boxes, list) or len(boxes) > MAX_REGIONS:
        raise InvalidRequestError(f"record {rid!r}: field 'bbox_list': must be a list of at "
                                  f"most {MAX_REGIONS} boxes")
    for k, box in enumerate(boxes):
        problem = box_problem(box)
        if problem:
            raise InvalidRequestError(f"record {rid!r}: field 'bbox_list': box {k} {box} "
                                      f"{problem}")
    scores = record.get("score_list")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(boxes) or
                               not all(isinstance(v, (int, float)) and np.isfinite(v)
                                       for v in scores)):
        raise InvalidRequestError(f"record {rid!r}: field 'score_list': needs {len(boxes)} "
                                  "finite numbers")
    turns = " ".join(t.get("value", "") for t in record["conversations"]  # a list: _turn
                     if isinstance(t, dict) and isinstance(t.get("value"), str))
    refs = [int(k) for k in REGION_REF.findall(turns)]
    indices = record.get("region_indices") or []
    if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices):
        raise InvalidRequestError(f"record {rid!r}: field 'region_indices': must be a list "
                                  "of integers")
    if not boxes:
        check_boxless(record, answer)
    bad = [k for k in refs + indices if not 0 <= k < len(boxes)]
    if bad:
        raise InvalidRequestError(f"record {rid!r}: refers to region {max(bad)} but there "
                                  f"are {len(boxes)} boxes")


def check_boxes_in_image(record: dict, width: float, height: float) -> None:
    """Every box of ``record`` keeps some area inside its ``width`` x ``height`` pixel image:
    inference refuses a box that lies entirely outside the image (``VLXSeek.query``), so
    training must not teach the features of one. Boxes that extend beyond it are fine (both
    clip them).

    Raises:
        InvalidRequestError: naming the record id and the box.
    """
    for k, box in enumerate(record.get("bbox_list") or ()):
        x1, y1, x2, y2 = (float(v) for v in box)
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise InvalidRequestError(
                f"record {record.get('id')!r}: field 'bbox_list': box {k} {list(box)} lies "
                f"entirely outside the {width:g}x{height:g} (width x height) image")


def _turn(record: dict, role: str) -> str:
    turns = record.get("conversations") or ()
    if not isinstance(turns, list):
        raise InvalidRequestError(f"record {record.get('id')!r}: field 'conversations': must "
                                  f"be a list of turns, got {type(turns).__name__}")
    for turn in turns:
        if isinstance(turn, dict) and turn.get("from") == role:
            value = turn.get("value")
            if isinstance(value, str):
                return value
    raise InvalidRequestError(f"record {record.get('id')!r} has no {role!r} turn")


@dataclass(frozen=True)
class RegionChoiceIds:
    """Token ids of the region choices of an answer.

    Attributes:
        regions: the ids of ``<region0>`` … ``<region99>``.
        none: the id of ``None`` (the rejection form, a choice right after ``<objects>``), or
            ``None`` where the tokenizer splits it.
        objects: the id of ``<objects>``.
        ground: the ids of ``<ground>`` and ``</ground>`` (the grounded phrase lies between).
    """

    regions: frozenset
    none: Optional[int]
    objects: int
    ground: Tuple[int, int]


@dataclass
class TrainingSample:
    """One training example (CPU tensors).

    Attributes:
        input_ids: long ``[L_ids]``: prompt (with −200 / −300 placeholders) + answer ids.
        labels: long ``[L_ids]``: :data:`IGNORE_INDEX` on the prompt, the answer ids (and the
            closing ``<|im_end|>``) on the answer; aligned with ``input_ids`` (not shifted).
        image: the preprocessed image and boxes (see :class:`PreparedImage`); ``None`` for a
            text-region record (no ``-200`` / ``-300`` placeholders in ``input_ids``).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    image: Optional[PreparedImage]


class SampleBuilder:
    """Builds :class:`TrainingSample` objects from records.

    Args:
        tokenizer: the checkpoint's tokenizer (VLM-FO1 added tokens included).
        preprocessor: the checkpoint's :class:`ImagePreprocessor`.
        images_dir: directory that record ``image`` paths are relative to.
        loss_on: ``"answer"`` (default, the paper's recipe: every answer token and the closing
            ``<|im_end|>``), ``"regions"``: only the answer's region choices, i.e. the
            ``<regionK>`` tokens and the ``None`` of a rejection block, or ``"choices"``: the
            region choices and the grounded phrases (the tokens between ``<ground>`` and
            ``</ground>``). The last two are vlxseek's binding curriculum for models trained
            from scratch: the markup is learned in a few steps, and every other answer
            position costs a 151,936-way softmax. Choosing the phrase is what makes the
            answer attend to the rows by content; without it the reverse lookup did not
            form (docs/scene-model-notes.md "What forms it").

    Raises:
        InvalidRequestError: another ``loss_on``.
    """

    def __init__(self, tokenizer, preprocessor: ImagePreprocessor, images_dir: str = ".",
                 loss_on: str = "answer"):
        if loss_on not in LOSS_ON:
            raise InvalidRequestError(f"loss_on must be one of {', '.join(LOSS_ON)}: "
                                      f"{loss_on!r}")
        self.prompt_tokenizer = PromptTokenizer(tokenizer)
        self.preprocessor = preprocessor
        self.images_dir = images_dir
        self.loss_on = loss_on
        self.im_end = self.prompt_tokenizer.im_end
        self._choice_ids: Optional[RegionChoiceIds] = None  # built on first use
        self._foreign_ids: Optional[Dict[int, str]] = None  # added ids no answer may hold

    def prompt_ids(self, record: dict) -> List[int]:
        """Prompt ids of ``record``, equal to inference's for the same question and boxes.

        A record without boxes (empty or absent ``bbox_list``) gets the prompt without a
        region line (spec §3.2), as ``VLXSeek.query`` builds it for a frame without regions.
        """
        parts = record_prompt_parts(record)
        return self.prompt_tokenizer.build(parts, len(record.get("bbox_list") or ()))

    def answer_ids(self, answer: str) -> List[int]:
        """Ids of the answer text (markup tokens as single ids) followed by ``<|im_end|>``.

        Raises:
            InvalidRequestError: the text holds an added token other than the VLM-FO1 markup
                (``<regionK>``, ``<ground>``, ``<objects>``, ``<think>`` and their closing
                forms), e.g. ``<|im_start|>`` or ``<tool_call>``.
        """
        ids = self.prompt_tokenizer.parts_ids([TemplateText(answer)])
        if self._foreign_ids is None:
            vocab = self.prompt_tokenizer.tokenizer.get_added_vocab()
            self._foreign_ids = {i: t for t, i in vocab.items()
                                 if t not in VLM_FO1_ADDED_TOKENS}
        foreign = [self._foreign_ids[i] for i in ids if i in self._foreign_ids]
        if foreign:
            raise InvalidRequestError(f"the answer holds the special token {foreign[0]!r}, "
                                      "which no answer writes")
        return ids + [self.im_end]

    def load_image(self, record: dict) -> Image.Image:
        """The record's image as PIL RGB.

        Raises:
            InvalidRequestError: missing or unreadable file, not an image, truncated, or a
                decompression bomb (:func:`~vlxseek_core.image_files.read_rgb`).
        """
        from ..errors import InvalidImageError
        from ..image_files import read_rgb

        path = os.path.join(self.images_dir, str(record.get("image", "")))
        try:
            return read_rgb(path)
        except InvalidImageError as exc:
            raise InvalidRequestError(f"record {record.get('id')!r}: {exc}") from None

    def build(self, record: dict, image: Optional[Image.Image] = None) -> TrainingSample:
        """Build the sample of ``record`` (``image`` given = do not read it from disk).

        Raises:
            InvalidRequestError: a malformed record (see :func:`check_record`), an
                unreadable image or a box entirely outside it (see
                :func:`check_boxes_in_image`).
        """
        prompt, answer = self.token_ids(record)
        prepared = None
        if not is_text_region_record(record):
            image = image if image is not None else self.load_image(record)
            check_boxes_in_image(record, *image.size)
            prepared = self.preprocessor(image, _boxes(record))
        ids = torch.tensor(prompt + answer, dtype=torch.long)
        targets = answer if self.loss_on == "answer" else self._choices(answer)
        labels = torch.tensor([IGNORE_INDEX] * len(prompt) + targets, dtype=torch.long)
        return TrainingSample(ids, labels, prepared)

    def token_ids(self, record: dict) -> Tuple[List[int], List[int]]:
        """``(prompt ids, answer ids)`` of ``record``, as :meth:`build` makes them, without
        reading the image (the prompt's image placeholder is one id here).

        Raises:
            InvalidRequestError: as :meth:`build`, except for image files.
        """
        check_record(record)
        answer_text = _turn(record, "gpt")
        if is_text_region_record(record):
            texts, parts = check_text_region_record(record)
            prompt = text_region_prompt_ids(self.prompt_tokenizer, parts, texts)
        else:
            prompt = self.prompt_ids(record)
        try:
            return prompt, self.answer_ids(answer_text)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"record {record.get('id')!r}: {exc}") from None

    def region_choice_ids(self) -> "RegionChoiceIds":
        """The token ids that make up region choices in answers (see :class:`RegionChoiceIds`)."""
        if self._choice_ids is None:
            tok = self.prompt_tokenizer
            none = tok.text_ids("None")
            self._choice_ids = RegionChoiceIds(
                frozenset(tok.token_id(region_token(k)) for k in range(MAX_REGIONS)),
                none[0] if len(none) == 1 else None, tok.token_id("<objects>"),
                (tok.token_id("<ground>"), tok.token_id("</ground>")))
        return self._choice_ids

    def _choices(self, answer: List[int]) -> List[int]:
        """``answer`` with :data:`IGNORE_INDEX` everywhere but the region choices (and, for
        ``loss_on="choices"``, the grounded phrases).

        Raises:
            InvalidRequestError: the answer makes no region choice (no ``<regionK>`` and no
                ``<objects>None``), so the sample would have no loss.
        """
        ids = self.region_choice_ids()
        out = [t if (t in ids.regions or (t == ids.none and k and answer[k - 1] == ids.objects))
               else IGNORE_INDEX for k, t in enumerate(answer)]
        if all(t == IGNORE_INDEX for t in out):
            raise InvalidRequestError("with the loss on region choices, every answer "
                                      "needs a <regionK> or a rejection block")
        if self.loss_on == "choices":
            in_phrase = False
            for k, t in enumerate(answer):
                if t == ids.ground[1]:
                    in_phrase = False
                if in_phrase:
                    out[k] = t
                if t == ids.ground[0]:
                    in_phrase = True
        return out


def collate_samples(samples: Sequence[TrainingSample]) -> Dict[str, list]:
    """Batch for :class:`~vlxseek_core.training.model.TrainingModel`: lists of tensors, one per
    sample (images differ in size and region count, so nothing is stacked here); the image
    entries of a sample without an image (text-region record) are ``None``."""
    fields = ("pixel_values", "image_grid_thw", "aux_pixel_values", "aux_boxes", "vt_boxes")
    batch: Dict[str, list] = {"input_ids": [s.input_ids for s in samples],
                              "answer_labels": [s.labels for s in samples]}
    for name in fields:
        batch[name] = [None if s.image is None else getattr(s.image, name) for s in samples]
    return batch
