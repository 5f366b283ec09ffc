"""The VLM-FO1 family (``model_type`` ``omchat_qwen2_5_vl``): the project's original code behind
the :class:`~vlxseek_core.families.ModelFamily` interface, unchanged (spec vlm-fo1 §2-§4).

Loading is :func:`vlxseek_core.checkpoint.load_model`; the tokenizer needs ``<region0>``,
``<ground>``, ``<objects>``; preprocessing is :class:`~vlxseek_core.preprocessing.
ImagePreprocessor` (Qwen2-VL PIL processor of the checkpoint, DaViT aux image); prompts are
:mod:`vlxseek_core.prompts` (system turn unless the task text says ``system``, ``<regionK>``,
−200/−300 placeholders spliced by the model); regions keep the caller's order.
"""
from __future__ import annotations

from typing import Hashable, List, Optional, Sequence, Tuple

from ..checkpoint import load_model
from ..devices import compile_vision_towers
from ..errors import CheckpointError
from ..parsing import REGION_INDEX_TOKENS, strip_end_tokens
from ..prompts import TASKS, PromptTokenizer, parts_to_text, task_parts
from ..tokenizer import load_tokenizer
from ..tokens import END_OF_TEXT, IM_END
from . import FamilyPrompts, ModelFamily, PromptRequest

DEFAULT_MAX_NEW_TOKENS = 1024


class FO1Prompts(FamilyPrompts):
    """VLM-FO1 prompts: :class:`~vlxseek_core.prompts.PromptTokenizer`; the prefix key is the
    system-turn flag (spec §7.11), so a frame has at most two cached prefixes. Constrained
    decoding uses the processor's defaults (``<regionK>``, special ids from 151643).

    Attributes:
        prompt_tokenizer: the :class:`~vlxseek_core.prompts.PromptTokenizer`.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompt_tokenizer = PromptTokenizer(tokenizer)
        self.end_ids = [i for i in tokenizer.convert_tokens_to_ids([IM_END, END_OF_TEXT])
                        if i is not None]

    def check(self, task: str, text: str, region_indices: Optional[Sequence[int]],
              user_boxes: bool) -> None:
        """Nothing beyond :mod:`vlxseek_core.validation` (written for VLM-FO1's tasks)."""

    def request(self, task: str, text: str, region_indices: Sequence[int],
                enc) -> PromptRequest:
        """The task's prompt parts (:func:`~vlxseek_core.prompts.task_parts`)."""
        parts = task_parts(task, text, region_indices or ())
        return PromptRequest(task, parts_to_text(parts), strip_end_tokens, parts)

    def prefix_ids(self, key: Hashable, enc) -> List[int]:
        """:meth:`~vlxseek_core.prompts.PromptTokenizer.build_prefix` (``key`` = system flag)."""
        return self.prompt_tokenizer.build_prefix(len(enc.proposals), bool(key))

    def prompt_ids(self, req: PromptRequest, enc) -> Tuple[Optional[Hashable], List[int]]:
        """``(system flag, build_suffix(parts))``."""
        parts = req.context
        return (self.prompt_tokenizer.wants_system_turn(parts),
                self.prompt_tokenizer.build_suffix(parts))


class VLMFO1Family(ModelFamily):
    """VLM-FO1 (:mod:`vlxseek_core.checkpoint`, :mod:`vlxseek_core.prompts`, …)."""

    name = "VLM-FO1"
    model_type = "omchat_qwen2_5_vl"
    index_tokens = REGION_INDEX_TOKENS
    tasks = TASKS
    default_max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    verbatim_eval_prompts = True

    def load_model(self, directory, dtype, device, allow_key_mismatch, attn_implementation):
        return load_model(directory, dtype=dtype, device=device,
                          allow_key_mismatch=allow_key_mismatch,
                          attn_implementation=attn_implementation)

    def load_tokenizer(self, directory):
        return load_tokenizer(directory)

    def build_preprocessor(self, directory, model):
        """The checkpoint's Qwen2-VL PIL processor + the DaViT aux image; the aux side is the
        reference processor's hard-coded 768, not the config's ``aux_image_size`` (spec §4.1
        step 3)."""
        from transformers import Qwen2VLImageProcessorPil

        from ..preprocessing import ImagePreprocessor

        try:
            qwen_processor = Qwen2VLImageProcessorPil.from_pretrained(directory)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types here
            raise CheckpointError(f"cannot read preprocessor_config.json in {directory}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return ImagePreprocessor(qwen_processor, model.config.aux_image_aspect_ratio)

    def compile_towers(self, model, backend):
        compile_vision_towers(model, backend)

    def prompts(self, tokenizer, model) -> FO1Prompts:
        return FO1Prompts(tokenizer)

    def make_tiny_model(self, directory, seed=0, preset="tiny", aux_image_aspect_ratio="squash",
                        space_variant_similarity=0.0):
        """:func:`vlxseek_core.tiny.make_tiny_model` (presets ``tiny``, ``small``)."""
        from ..errors import CheckpointError
        from ..tiny import make_tiny_model

        try:
            return make_tiny_model(directory, seed=seed, preset=preset,
                                   aux_image_aspect_ratio=aux_image_aspect_ratio,
                                   space_variant_similarity=space_variant_similarity)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc

    def inspect(self, directory, spec_path):
        from ..inspect_checkpoint import inspect_fo1_checkpoint

        return inspect_fo1_checkpoint(directory, spec_path)


FAMILY = VLMFO1Family()
