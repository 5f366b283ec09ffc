"""The VLX-Seek 1.5 family (``model_type`` ``vlx_seek_1_5``) behind the
:class:`~vlxseek_core.families.ModelFamily` interface (spec vlx-seek-1.5 §1-§4, §6).

What the pipeline gets from here:

* loading: :func:`.checkpoint.load_model` (strict, reference key names); the tokenizer must have
  ``<obj0>``, ``<objfeat>``, ``<|image_pad|>``, ``<ground>``, ``<objects>``;
* preprocessing: :class:`.preprocessing.VLXSeek15Preprocessor` (Qwen2-VL processor with patch 16,
  merge 2, 3136…4194304 pixels; aux image = the original RGB / 255; boxes in original pixels, in
  the model-side order of ``mm_bbox_order_mode``);
* tasks: this project's names mapped to the 1.5 templates (:data:`.prompts.PROJECT_TASKS`:
  ``detect`` → detection, ``refer`` → grounding_single, ``count`` → counting, ``caption`` →
  brief_region_caption, ``ocr`` → region_ocr, ``reason`` → reasoning_detection, ``vqa``); the
  other project tasks have no 1.5 template and are refused;
* prompts: :func:`.prompts.task_question` with the caller's ``<objI>`` → model-side ``<objM>``
  (:class:`.box_order.BoxOrder`) → :func:`.prompts.render_prompt` (no system turn) →
  :func:`.expansion.tokenize_prompt` → :func:`.expansion.expand_placeholders` (ids from the
  tokenizer, image pads and one ``<objfeat>`` per region);
* answers: decoded with special tokens, end tokens removed, ``<objM>`` mapped back to the
  caller's ``<objC>``, parsed with ``<objK>`` (so result indices are always the caller's);
* decoding: greedy, as the reference CLI (§4.3), stop at ``<|im_end|>``/``<|endoftext|>``,
  default budget 2048 new tokens (the CLI's).
"""
from __future__ import annotations

from typing import Hashable, List, Optional, Sequence, Tuple

from ...parsing import strip_end_tokens
from ...prompts import TASKS
from ...tokens import (END_OF_TEXT, GROUND_OPEN, IM_END, IM_START, IMAGE_PAD,
                       IMAGE_PLACEHOLDER, OBJECTS_OPEN, VISION_END, VISION_START)
from .. import FamilyPrompts, ModelFamily, PromptRequest
from .box_order import OBJ_TOKENS
from .config import MODEL_TYPE
from .expansion import (OBJ_FEATURE_PLACEHOLDER, expand_placeholders, object_token_count,
                        tokenize_prompt)
from .preprocessing import model_order
from .prompts import GENERATION, PROJECT_TASKS, render_prompt, task_question

PREFIX_KEY = "vlx_seek_1_5"
"""The one prefix variant of a frame (no system turn, so every question shares it)."""
REQUIRED_TOKENS = ("<obj0>", OBJ_FEATURE_PLACEHOLDER, IMAGE_PAD, GROUND_OPEN, OBJECTS_OPEN,
                   IM_START, IM_END)


def render_prefix(num_boxes: int) -> str:
    """The part of :func:`.prompts.render_prompt` before the question: the user turn's image
    line and, with boxes, the ``<obj0><objfeat>…\\n`` line (it depends only on the frame)."""
    box_line = "".join(f"{OBJ_TOKENS.token(k)}{OBJ_FEATURE_PLACEHOLDER}"
                       for k in range(num_boxes))
    return (f"{IM_START}user\n{VISION_START}{IMAGE_PLACEHOLDER}{VISION_END}\n"
            + (box_line + "\n" if num_boxes else ""))


class VLXSeek15Prompts(FamilyPrompts):
    """VLX-Seek 1.5 prompts bound to a tokenizer and the checkpoint's ``mm_bbox_order_mode``.

    Attributes:
        max_boxes: the tokenizer's ``<objK>`` count (at most this many regions).
    """

    def __init__(self, tokenizer, order_mode: str):
        self.tokenizer = tokenizer
        self.order_mode = order_mode
        self.max_boxes = object_token_count(tokenizer)
        self.end_ids = [i for i in tokenizer.convert_tokens_to_ids([IM_END, END_OF_TEXT])
                        if i is not None]
        # constrained answers name model-side <objK>; ids from <|endoftext|> on are special or
        # added tokens, never label text (§1.5)
        self.constraint_options = {
            "region_tokens": [OBJ_TOKENS.token(k) for k in range(self.max_boxes)],
            "first_special_id": int(tokenizer.convert_tokens_to_ids(END_OF_TEXT))}

    def check(self, task: str, text: str, region_indices: Optional[Sequence[int]],
              user_boxes: bool) -> None:
        """:func:`.prompts.task_question` on the request (region tasks without indices refer
        to the user boxes: index 0 stands in, the range is checked once the boxes are known).

        Raises:
            InvalidRequestError: control tokens in the text, region indices for a task other
                than caption/ocr, and the other refusals of ``task_question``.
        """
        indices = region_indices or ([0] if TASKS[task].needs_regions else [])
        task_question(task, text, indices)

    def request(self, task: str, text: str, region_indices: Sequence[int],
                enc) -> PromptRequest:
        """Question in caller indices (reported), remapped to model indices (asked, §4.4).

        Raises:
            InvalidRequestError: as :func:`.prompts.task_question`, or more regions than the
                tokenizer has ``<objK>`` tokens.
        """
        order = model_order(enc.proposals.boxes, enc.image_size, self.order_mode,
                            max_boxes=self.max_boxes)
        # a frame without regions is not run for box tasks (the pipeline says so): render
        # it anyway instead of refusing
        question = task_question(task, text, region_indices or (), len(order) or None)
        prompt = render_prompt(order.question_to_model(question), len(order))

        def clean(raw: str) -> str:
            return order.answer_to_caller(strip_end_tokens(raw))
        return PromptRequest(task, question, clean, (prompt, len(order)))

    def _expand(self, prompt: str, num_boxes: int, enc) -> List[int]:
        ids = tokenize_prompt(prompt, self.tokenizer)
        grid = enc.frame.image_grid_thw.detach().cpu()
        return expand_placeholders(ids, self.tokenizer, grid, num_boxes).input_ids

    def prefix_ids(self, key: Hashable, enc) -> List[int]:
        """Expanded ids of :func:`render_prefix` (image pads, ``<objfeat>`` per region)."""
        n = len(enc.proposals)
        return self._expand(render_prefix(n), n, enc)

    def prompt_ids(self, req: PromptRequest, enc) -> Tuple[Optional[Hashable], List[int]]:
        """The reference's ids (one tokenization of the whole prompt, §1.6) split after the
        frame's prefix. The prefix ends with a newline that the Qwen pre-tokenizer always
        splits from the question's first character, so the split is exact; should a
        tokenizer merge across it, the whole prompt is used without a cached prefix."""
        prompt, n = req.context
        full = self._expand(prompt, n, enc)
        prefix = self.prefix_ids(PREFIX_KEY, enc)
        if full[:len(prefix)] == prefix:
            return PREFIX_KEY, full[len(prefix):]
        return None, full


class VLXSeek15Family(ModelFamily):
    """VLX-Seek 1.5 (this package's config, model, checkpoint, prompt and answer modules)."""

    name = "VLX-Seek 1.5"
    model_type = MODEL_TYPE
    index_tokens = OBJ_TOKENS
    tasks = {name: TASKS[name] for name in PROJECT_TASKS}
    default_max_new_tokens = GENERATION["cli"].max_new_tokens
    verbatim_eval_prompts = False

    def load_model(self, directory, dtype, device, allow_key_mismatch, attn_implementation):
        from .checkpoint import load_model

        return load_model(directory, dtype=dtype, device=device,
                          allow_key_mismatch=allow_key_mismatch,
                          attn_implementation=attn_implementation)

    def load_tokenizer(self, directory):
        from ...tokenizer import load_tokenizer

        return load_tokenizer(directory, REQUIRED_TOKENS, self.name)

    def build_preprocessor(self, directory, model):
        from .preprocessing import VLXSeek15Preprocessor, load_qwen_processor

        return VLXSeek15Preprocessor(load_qwen_processor(directory, model.config.vision_config),
                                     model.config.mm("mm_bbox_order_mode"))

    def compile_towers(self, model, backend):
        import torch

        # the aux module's own forward (conditioning + forward_intermediates) is what runs
        for tower in (model.model.vision_tower.visual, model.model.vision_tower_aux):
            tower.forward = torch.compile(tower.forward, backend=backend, dynamic=True)

    def prompts(self, tokenizer, model) -> VLXSeek15Prompts:
        return VLXSeek15Prompts(tokenizer, model.config.mm("mm_bbox_order_mode"))

    def check_task(self, task: str) -> str:
        """``task``, refused when it has no 1.5 template (message from
        :func:`.prompts.family_task`: the task and every supported one)."""
        from .prompts import family_task

        family_task(task)
        return task

    def make_tiny_model(self, directory, seed=0, preset="tiny", aux_image_aspect_ratio="squash",
                        space_variant_similarity=0.0):
        """:func:`.tiny.make_tiny_model`; only the ``tiny`` preset (the aux image has no
        aspect option: it is the original image)."""
        from ...errors import CheckpointError
        from .tiny import make_tiny_model

        if preset != "tiny":
            raise CheckpointError(f"{self.name} has only the tiny preset, not {preset!r}")
        if space_variant_similarity:
            raise CheckpointError(f"{self.name} tiny checkpoints have no space-variant "
                                  "similarity option (VLM-FO1 only)")
        return make_tiny_model(directory, seed=seed)

    def inspect(self, directory, spec_path):
        from .inspect import inspect_checkpoint

        return inspect_checkpoint(directory, spec_path)


FAMILY = VLXSeek15Family()
