"""Model families: what a checkpoint's ``config.json`` ``model_type`` selects.

Everything that differs between model families sits behind two small classes defined here, and
nothing else of the shared core knows which family it runs:

* :class:`ModelFamily` (one stateless instance per family): strict checkpoint loading, the
  tokenizer (with the family's required tokens), the image preprocessor, the supported tasks,
  the index-token spelling, the decoding budget default, tower compilation, tiny checkpoints,
  ``inspect``;
* :class:`FamilyPrompts` (one per loaded tokenizer, from :meth:`ModelFamily.prompts`): request
  checks, prompt ids split into a per-frame prefix (cached with its KV/recurrent state) and a
  per-question suffix, stop ids, the constrained decoder's index tokens, and the cleaning of
  the decoded text into an answer in the caller's region indices.

Registry (:data:`MODEL_TYPES`): ``omchat_qwen2_5_vl`` → VLM-FO1 (:mod:`.vlm_fo1`, the
project's original code, unchanged), ``vlx_seek_1_5`` → VLX-Seek 1.5
(:mod:`.vlx_seek_1_5.family`). Implementations are imported on first use, so importing this
module loads no model code. Shared core modules reach family code only through these
functions; family modules import the shared core, never the other way round.
"""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

from ..errors import CheckpointError, InvalidRequestError

FAMILY_KEYS: Dict[str, str] = {"vlm_fo1": "omchat_qwen2_5_vl", "vlx_seek_1_5": "vlx_seek_1_5"}
"""Short family names (``vlxseek make-tiny-model --family``) → ``model_type``."""
MODEL_TYPES: Dict[str, Tuple[str, str]] = {
    "omchat_qwen2_5_vl": ("vlxseek_core.families.vlm_fo1", "VLM-FO1"),
    "vlx_seek_1_5": ("vlxseek_core.families.vlx_seek_1_5.family", "VLX-Seek 1.5"),
}
"""``config.json`` ``model_type`` → (module defining ``FAMILY``, family name)."""


@dataclass(frozen=True)
class PromptRequest:
    """One question, checked and rendered for a model family (no ids yet).

    Attributes:
        task: the project task name (:data:`vlxseek_core.prompts.TASKS`).
        prompt_text: the task text as the result reports it, region references in the
            caller's indices (rows of the frame's proposals).
        clean: decoded completion (special tokens kept) → the answer text: end tokens removed,
            stripped, index tokens in the caller's indices.
        context: the family's own data for :meth:`FamilyPrompts.prompt_ids` (VLM-FO1: the
            prompt parts; VLX-Seek 1.5: the rendered prompt and the box order).
    """

    task: str
    prompt_text: str
    clean: Callable[[str], str]
    context: Any = None


class FamilyPrompts(ABC):
    """The prompt/decoding half of a family, bound to one tokenizer and model config.

    Attributes:
        end_ids: token ids that end an answer (``eos_token_id`` of ``generate``; the last one
            also pads).
        constraint_options: keyword arguments of
            :class:`~vlxseek_core.decoding.RegionAnswerLogitsProcessor` for the family's index
            tokens (``region_tokens``, ``first_special_id``); empty = VLM-FO1's defaults.
    """

    end_ids: List[int]
    constraint_options: Dict[str, Any] = {}

    @abstractmethod
    def check(self, task: str, text: str, region_indices: Optional[Sequence[int]],
              user_boxes: bool) -> None:
        """Refuse what the family cannot ask, before any model work.

        Args:
            task: a task of :attr:`ModelFamily.tasks` (already checked).
            text: the (already type-checked) user text.
            region_indices: caller indices or ``None``; their range is checked later.
            user_boxes: the regions are user boxes (a region task without indices then
                refers to all of them).

        Raises:
            InvalidRequestError: the request cannot be put to this family's model.
        """

    @abstractmethod
    def request(self, task: str, text: str, region_indices: Sequence[int],
                enc) -> PromptRequest:
        """Render one question about an encoded frame (:class:`~vlxseek_core.frames.
        FrameEncoding`; its ``proposals`` and ``image_size`` are read, not its tensors).

        Raises:
            InvalidRequestError: the question cannot be asked (e.g. too many regions).
        """

    @abstractmethod
    def prefix_ids(self, key: Hashable, enc) -> List[int]:
        """Prompt ids shared by every question with prefix key ``key`` on frame ``enc``
        (image and region placeholders as :meth:`build_inputs_embeds` of the model takes
        them)."""

    @abstractmethod
    def prompt_ids(self, req: PromptRequest, enc) -> Tuple[Optional[Hashable], List[int]]:
        """``(prefix key, suffix ids)`` of a question: ``prefix_ids(key, enc) + suffix`` are
        the reference's prompt ids. A key of ``None`` means no shareable prefix: the suffix is
        the whole prompt and no prefix cache is used."""


class ModelFamily(ABC):
    """Everything family-specific the pipeline, the CLI and the node need.

    Attributes:
        name: human-readable name (``"VLM-FO1"``).
        model_type: the ``config.json`` ``model_type`` that selects it.
        index_tokens: the region index token spelling (:class:`~vlxseek_core.parsing.
            IndexTokens`) of answers, parsing and constrained decoding.
        tasks: project task name → :class:`~vlxseek_core.prompts.TaskSpec` of the tasks the
            family has a template for (a subset of :data:`vlxseek_core.prompts.TASKS`).
        default_max_new_tokens: the decoding budget when the caller sets none.
        verbatim_eval_prompts: ``vlxseek eval`` sends the benchmark's own prompt text
            (VLM-FO1's reference evaluation); ``False``: the family's task templates.
    """

    name: str
    model_type: str
    index_tokens: Any
    tasks: Mapping[str, Any]
    default_max_new_tokens: int
    verbatim_eval_prompts: bool = True

    @abstractmethod
    def load_model(self, directory: str, dtype, device: str, allow_key_mismatch: bool,
                   attn_implementation: str):
        """``(model in eval mode, LoadReport)``; strict key/shape check.

        Raises:
            CheckpointError: unreadable/incompatible checkpoint or key mismatch.
        """

    @abstractmethod
    def load_tokenizer(self, directory: str):
        """The checkpoint's tokenizer, checked for the family's tokens.

        Raises:
            CheckpointError: missing/malformed tokenizer or family tokens.
        """

    @abstractmethod
    def build_preprocessor(self, directory: str, model):
        """A callable ``(image, boxes [N, 4] original-pixel xyxy) → PreparedImage`` whose
        box tensors are in the order the model sees the regions.

        Raises:
            CheckpointError: unreadable ``preprocessor_config.json``.
        """

    @abstractmethod
    def compile_towers(self, model, backend: str) -> None:
        """``torch.compile`` the vision towers' forward with ``backend``."""

    @abstractmethod
    def prompts(self, tokenizer, model) -> FamilyPrompts:
        """The prompt/decoding half bound to ``tokenizer`` and ``model.config``."""

    def check_task(self, task: str) -> str:
        """``task`` (a project task name), refused when the family has no template for it.

        Raises:
            InvalidRequestError: naming the task and the supported ones.
        """
        if task not in self.tasks:
            raise InvalidRequestError(f"task {task!r} is not supported by {self.name} "
                                      f"checkpoints; supported tasks: {', '.join(self.tasks)}")
        return task

    @abstractmethod
    def make_tiny_model(self, directory: str, seed: int = 0, preset: str = "tiny",
                        aux_image_aspect_ratio: str = "squash",
                        space_variant_similarity: float = 0.0) -> str:
        """Write a random checkpoint of the family in the real on-disk format (tests, demos)
        and return its path. ``space_variant_similarity``: see
        :func:`vlxseek_core.tiny.make_tiny_model`.

        Raises:
            CheckpointError: a preset or option the family does not have.
        """

    @abstractmethod
    def inspect(self, directory: str, spec_path: Optional[str]):
        """``vlxseek inspect``: an :class:`~vlxseek_core.inspect_checkpoint.InspectReport`
        without loading weights; never raises for problems of the checkpoint."""


def supported_model_types() -> str:
    """``"omchat_qwen2_5_vl (VLM-FO1), vlx_seek_1_5 (VLX-Seek 1.5)"`` for messages."""
    return ", ".join(f"{t} ({name})" for t, (_, name) in MODEL_TYPES.items())


def family_for_model_type(model_type: Any) -> ModelFamily:
    """The family registered for ``model_type``.

    Raises:
        CheckpointError: an unknown (or non-string) model type, listing the supported ones.
    """
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise CheckpointError(f"model_type {model_type!r} is not supported; supported model "
                              f"types: {supported_model_types()}")
    module, _ = MODEL_TYPES[model_type]
    return importlib.import_module(module).FAMILY


def read_model_type(directory: str) -> Any:
    """``model_type`` of ``directory/config.json`` (``None`` when absent).

    Raises:
        CheckpointError: no directory, no or unreadable ``config.json``, not a JSON object.
    """
    from ..checkpoint import read_json

    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no config.json in {directory!r}")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw.get("model_type")


def family_of_checkpoint(directory: str) -> ModelFamily:
    """The family of a checkpoint directory, from its ``config.json`` ``model_type``.

    Raises:
        CheckpointError: as :func:`read_model_type` and :func:`family_for_model_type`.
    """
    model_type = read_model_type(directory)
    try:
        return family_for_model_type(model_type)
    except CheckpointError as exc:
        raise CheckpointError(f"{os.path.join(directory, 'config.json')}: {exc}") from None


def family_of_model(model) -> ModelFamily:
    """The family of a loaded model (its ``config.model_type``).

    Raises:
        CheckpointError: an unknown model type.
    """
    return family_for_model_type(getattr(getattr(model, "config", None), "model_type", None))


__all__ = ["FAMILY_KEYS", "MODEL_TYPES", "FamilyPrompts", "ModelFamily", "PromptRequest",
           "family_for_model_type", "family_of_checkpoint", "family_of_model",
           "read_model_type", "supported_model_types"]
