"""VLX-Seek 1.5 placeholder expansion: prompt string → reference input ids → ids for
``generate`` (spec vlx-seek-1.5 §1.5, §1.6).

Every id is read from the tokenizer (``convert_tokens_to_ids``); only the placeholders −200
(``<image>``) and −300 (``<objfeat>``) are fixed, as in the reference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

import numpy as np

from ...errors import CheckpointError, InvalidRequestError
from ...tokens import IMAGE_PAD, IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER_ID
from ... import validation
from .box_order import OBJ_TOKENS

OBJ_FEATURE_PLACEHOLDER = "<objfeat>"
OBJ_FEATURE_PLACEHOLDER_ID = -300
"""``<objfeat>`` before expansion; expanded to the tokenizer's ``<objfeat>`` id (§1.5, §1.6)."""
MERGE_FACTOR = 4
"""Patches per image token: the vision merger joins 2×2 patches (§1.6)."""


def _token_id(tokenizer, token: str) -> int:
    """The id of an added token; :class:`CheckpointError` when the tokenizer lacks it."""
    idx = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if idx is None or (unk is not None and idx == unk):
        raise CheckpointError(f"the tokenizer has no token {token!r}")
    return int(idx)


def object_token_count(tokenizer, limit: int = 1000) -> int:
    """How many ``<objK>`` tokens the tokenizer has (``<obj0>``… without a gap; spec §7.4)."""
    vocab = tokenizer.get_vocab()
    count = 0
    while count < limit and OBJ_TOKENS.token(count) in vocab:
        count += 1
    return count


def tokenize_prompt(prompt: str, tokenizer) -> List[int]:
    """Input ids as the reference makes them (spec §1.6).

    The prompt is split on ``<image>``, each piece on ``<objfeat>``, every chunk tokenized
    separately without special-token insertion (added-token strings in a chunk become their
    ids), and −200 / −300 put between the chunks.

    Returns:
        list of int with −200 (:data:`IMAGE_PLACEHOLDER_ID`) per image and −300
        (:data:`OBJ_FEATURE_PLACEHOLDER_ID`) per ``<objfeat>``.
    """
    ids: List[int] = []
    for i, piece in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_PLACEHOLDER_ID)
        for j, chunk in enumerate(piece.split(OBJ_FEATURE_PLACEHOLDER)):
            if j:
                ids.append(OBJ_FEATURE_PLACEHOLDER_ID)
            if chunk:
                ids += [int(t) for t in
                        tokenizer(chunk, add_special_tokens=False)["input_ids"]]
    return ids


@dataclass(frozen=True)
class ExpandedPrompt:
    """Result of :func:`expand_placeholders`.

    Attributes:
        input_ids: ids with every −200 replaced by its image's pad tokens and every −300 by the
            ``<objfeat>`` id (length = the reference's ``prompt_tokens``).
        image_token_counts: pad tokens per image, ``t·h·w / 4`` each.
        num_object_tokens: ``<objfeat>`` positions (object feature rows the model takes).
    """

    input_ids: List[int]
    image_token_counts: Tuple[int, ...]
    num_object_tokens: int


def expand_placeholders(ids: Sequence[int], tokenizer, image_grid_thw: Any,
                        num_object_features: int) -> ExpandedPrompt:
    """Replace −200/−300 by real ids before ``generate`` (spec §1.6).

    Args:
        ids: from :func:`tokenize_prompt`.
        tokenizer: the checkpoint tokenizer; ``<|image_pad|>`` and ``<objfeat>`` ids are read
            from it.
        image_grid_thw: ``[num_images, 3]`` ints ``(t, h, w)`` in patches, one row per −200 in
            order (the processor's ``image_grid_thw``).
        num_object_features: object feature rows available (one per box, model order). More
            rows than ``<objfeat>`` tokens are truncated with a ``UserWarning``, as in the
            reference.

    Raises:
        InvalidRequestError: grid rows ≠ image placeholders, a grid whose ``t·h·w`` is not a
            positive multiple of 4, or fewer object features than ``<objfeat>`` tokens.
        CheckpointError: the tokenizer lacks ``<|image_pad|>`` or ``<objfeat>``.
    """
    pad_id = _token_id(tokenizer, IMAGE_PAD)
    objfeat_id = _token_id(tokenizer, OBJ_FEATURE_PLACEHOLDER)
    grid = np.asarray(validation.numeric_array(image_grid_thw, "image_grid_thw")).reshape(-1, 3)
    num_images = sum(1 for t in ids if t == IMAGE_PLACEHOLDER_ID)
    if len(grid) != num_images:
        raise InvalidRequestError(f"image_grid_thw has {len(grid)} rows for {num_images} "
                                  f"<image> placeholders")
    counts = []
    for row, (t, h, w) in enumerate(grid.tolist()):
        patches = t * h * w
        if patches <= 0 or patches != int(patches) or int(patches) % MERGE_FACTOR:
            raise InvalidRequestError(f"image_grid_thw[{row}] = {[t, h, w]}: t·h·w must be a "
                                      f"positive multiple of {MERGE_FACTOR}")
        counts.append(int(patches) // MERGE_FACTOR)
    num_obj = sum(1 for t in ids if t == OBJ_FEATURE_PLACEHOLDER_ID)
    if num_object_features < num_obj:
        raise InvalidRequestError(f"the prompt has {num_obj} <objfeat> tokens but only "
                                  f"{num_object_features} object features")
    if num_object_features > num_obj:
        warnings.warn(f"{num_object_features} object features for {num_obj} <objfeat> tokens; "
                      f"the extra features are dropped", UserWarning, stacklevel=2)
    out: List[int] = []
    images = iter(counts)
    for t in ids:
        if t == IMAGE_PLACEHOLDER_ID:
            out += [pad_id] * next(images)
        else:
            out.append(objfeat_id if t == OBJ_FEATURE_PLACEHOLDER_ID else int(t))
    return ExpandedPrompt(out, tuple(counts), num_obj)
