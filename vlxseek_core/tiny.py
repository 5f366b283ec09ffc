"""Tiny random VLM-FO1 checkpoints in the real on-disk format, for tests and demos.

The checkpoint has every file a real one has (``config.json`` with the reference ``model_type``
and ``mm_*`` keys, tokenizer files with the exact Qwen2 vocabulary and the VLM-FO1 tokens,
``preprocessor_config.json``, ``generation_config.json``, safetensors under reference names),
only with tiny sizes and random weights (``vlxseek_random_weights: true``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import torch

from .config import MODEL_TYPE, VLMFO1Config

TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=151936,
                 max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                 rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                 tie_word_embeddings=True)
TINY_VISION = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=2,
                   out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3],
                   tokens_per_second=2, in_chans=3)
TINY_DAVIT = dict(embed_dim=[16, 32, 64, 128], num_heads=[1, 2, 4, 8], num_groups=[1, 2, 4, 8],
                  depths=[1, 1, 1, 1])
TINY_SIMPLE_FPN_CHANNELS = 32
# "small": the from-scratch scene model of issue 9 (README "Procedural scenes and the scene
# model"): an LLM wide enough to learn region binding, bf16 weights under 50 MB (the 151,936-row
# tied vocabulary embedding is 39 MB of it).
SMALL_TEXT = dict(TINY_TEXT, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4,
                  rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})
# window_size 224: a 224-px scene is one attention window (same function as 112 px windows
# for the full-attention blocks, 4x fewer attention calls in the window blocks).
SMALL_VISION = dict(TINY_VISION, hidden_size=128, intermediate_size=256, num_heads=4,
                    out_hidden_size=128, window_size=224)
SMALL_DAVIT = dict(embed_dim=[24, 48, 96, 192], num_heads=[1, 2, 4, 8],
                   num_groups=[1, 2, 4, 8], depths=[1, 1, 1, 1])
SMALL_SIMPLE_FPN_CHANNELS = 64
PRESETS = {"tiny": (TINY_TEXT, TINY_VISION, TINY_DAVIT, TINY_SIMPLE_FPN_CHANNELS),
           "small": (SMALL_TEXT, SMALL_VISION, SMALL_DAVIT, SMALL_SIMPLE_FPN_CHANNELS)}
# Stock Qwen2.5-VL preprocessor values (min/max pixels are the effective ones, spec §7.1).
QWEN25_VL_PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessorPil", "do_resize": True, "do_rescale": True,
    "do_normalize": True, "do_convert_rgb": True, "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
    "merge_size": 2,
}


def tiny_config_dict(aux_image_aspect_ratio: str = "squash",
                     preset: str = "tiny") -> Dict[str, Any]:
    """The ``config.json`` content of a tiny checkpoint (reference layout: text keys on top).

    Args:
        aux_image_aspect_ratio: ``squash`` (768² aux image, the reference's), ``dynamic`` (aux
            image = input size; fast on small images) or ``dynamic_square``.
        preset: ``tiny`` (tests) or ``small`` (the trainable scene model).

    Raises:
        ValueError: unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    text, vision, davit, fpn = PRESETS[preset]
    region_hidden = sum(davit["embed_dim"]) + 4 * fpn
    return {
        "architectures": ["OmChatQwen25VLForCausalLM"],
        "model_type": MODEL_TYPE,
        **text,
        "vision_config": dict(vision),
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643,
        "mm_vision_tower": "Qwen2.5-VL-tiny", "mm_vision_tower_aux": "davit-tiny",
        "mm_hidden_size": vision["out_hidden_size"],
        "mm_projector_type": "identity", "mm_projector_aux_type": "mlp2x_gelu",
        "mm_region_hidden_size": region_hidden,
        "mm_use_vision_tower_region_feature": True, "mm_use_simpleFPN_for_vt": True,
        "mm_region_feature_combination": "concat", "mm_apply_position_embedding": True,
        "mm_pos_embedding_strategy": "bbox_based", "mm_apply_region_layer_norm": False,
        "mm_roi_output_size": 7, "mm_use_region_index_token": True,
        "aux_image_size": 768, "aux_image_aspect_ratio": aux_image_aspect_ratio,
        "vlxseek_aux_vision_config": dict(davit),
        "vlxseek_simple_fpn_channels": fpn,
        "vlxseek_random_weights": True,
    }


def space_variant_pairs(tokenizer) -> List[Tuple[int, int]]:
    """Every ``(spaced, bare)`` pair of token ids of ``tokenizer``'s byte-level BPE vocabulary
    where the bare token's text with a leading space (``Ġ``) is itself a token: ``(" red",
    "red")``, ``(" cat", "cat")``. The added tokens (``<ground>``, ``<region0>``, …) are not in
    the BPE vocabulary and never pair."""
    vocab = tokenizer.get_vocab()
    added = set(tokenizer.get_added_vocab())
    return sorted((i, vocab[t[1:]]) for t, i in vocab.items()
                  if t.startswith("\u0120") and len(t) > 1 and t[1:] in vocab
                  and t not in added and t[1:] not in added)


def word_pairs(tokenizer, words: Sequence[str]) -> Tuple[List[Tuple[int, int]], List[str]]:
    """``(spaced, bare)`` token-id pairs of those ``words`` that are one token both bare and
    with a leading space (``"red"`` → ``(id(" red"), id("red"))``; ``"astronaut"``, two
    tokens bare, has none), and the words that paired, in order."""
    pairs, paired = [], []
    for word in words:
        bare, spaced = tokenizer(word)["input_ids"], tokenizer(" " + word)["input_ids"]
        if len(bare) == 1 and len(spaced) == 1:
            pairs.append((spaced[0], bare[0]))
            paired.append(word)
    return pairs, paired


def _check_similarity(similarity: float) -> None:
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"space-variant similarity must be in [0, 1], got {similarity}")


def relate_space_variants(weight: torch.Tensor, pairs: List[Tuple[int, int]],
                          similarity: float) -> None:
    """Set, in place, each spaced row of the embedding ``weight`` ``[V, H]`` to
    ``similarity * bare + sqrt(1 - similarity²) * spaced`` (``pairs`` from
    :func:`space_variant_pairs`). For independent random rows of equal scale the two then have
    a cosine of about ``similarity`` and the spaced row keeps its scale; 1 makes them equal.

    Why (docs/scene-model-notes.md "Shared embedding rows carry the lookup over without
    training"): a random LLM's rows of ``red`` and `` red`` are unrelated, so a lookup learnt on
    one never serves the other, and a copy from a prompt's `` red`` into an answer's ``red`` has
    nothing to match; a pretrained LLM brings such pairs close. Tied output rows stay apart by the
    remainder.

    Raises:
        ValueError: ``similarity`` outside [0, 1].
    """
    _check_similarity(similarity)
    if not pairs or similarity == 0.0:
        return
    spaced, bare = (torch.tensor(ids) for ids in zip(*pairs))
    with torch.no_grad():
        weight[spaced] = (similarity * weight[bare]
                          + (1.0 - similarity ** 2) ** 0.5 * weight[spaced])


def relate_model_rows(model, pairs: List[Tuple[int, int]], similarity: float) -> None:
    """:func:`relate_space_variants` on ``model``'s input embedding, and on its output
    embedding when that is not tied to it (a tied one shares the weight, edited once)."""
    weight = model.get_input_embeddings().weight
    relate_space_variants(weight, pairs, similarity)
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weight:
        relate_space_variants(output.weight, pairs, similarity)


def make_tiny_model(directory: str, seed: int = 0, aux_image_aspect_ratio: str = "squash",
                    preset: str = "tiny", space_variant_similarity: float = 0.0) -> str:
    """Write a random VLM-FO1 checkpoint (``preset`` sizes, see :func:`tiny_config_dict`) in
    the real on-disk format to ``directory`` and return its path.

    ``space_variant_similarity`` (0: rows independent, as any random init) relates the
    embedding rows of each word and its space-prefixed form (:func:`relate_space_variants`;
    an initialisation for training from scratch, issue 9; recorded in ``config.json`` as
    ``vlxseek_space_variant_similarity`` when non-zero).

    Raises:
        ValueError: unknown preset, or ``space_variant_similarity`` outside [0, 1].
    """
    from transformers import GenerationConfig

    from .checkpoint import save_model
    from .modeling import VLMFO1ForCausalLM
    from .tokenizer import build_qwen25_vl_tokenizer

    _check_similarity(space_variant_similarity)  # before anything is written
    config_dict = tiny_config_dict(aux_image_aspect_ratio, preset)
    if space_variant_similarity:
        config_dict["vlxseek_space_variant_similarity"] = space_variant_similarity
    os.makedirs(directory, exist_ok=True)
    torch.manual_seed(seed)
    model = VLMFO1ForCausalLM(VLMFO1Config(**config_dict)).eval()
    tokenizer = build_qwen25_vl_tokenizer()
    if space_variant_similarity:
        relate_model_rows(model, space_variant_pairs(tokenizer), space_variant_similarity)
    save_model(model, directory)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "preprocessor_config.json"), "w", encoding="utf-8") as fh:
        json.dump(QWEN25_VL_PREPROCESSOR, fh, indent=2)
    GenerationConfig(do_sample=False, bos_token_id=151643, eos_token_id=[151645, 151643],
                     pad_token_id=151643).save_pretrained(directory)
    return directory
