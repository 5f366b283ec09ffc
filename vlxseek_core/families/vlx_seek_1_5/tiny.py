"""Tiny random VLX-Seek 1.5 checkpoints in the real on-disk format, for tests and demos.

Files: ``config.json`` (``model_type`` ``vlx_seek_1_5``, stock Qwen3.5 ``text_config`` /
``vision_config`` layout, the ``mm_*`` keys, ``vision_aux_config``), ``model.safetensors`` under
the reference names (bf16, as the released weights), ``preprocessor_config.json`` (a Qwen2VL
processor with patch 16), ``generation_config.json`` and the stand-in tokenizer of
:mod:`.tokenizer` (vocabulary 248320 as the real config, so every real token id exists). Only
the widths are tiny; the LLM is hybrid like Qwen3.5 (3 gated-delta-net layers, 1 attention
layer) and the HFRE uses the 10B variant's path (primary SimpleFP, concat, ``mlp2x_gelu``).
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict

import torch

from .config import (IMAGE_TOKEN_ID, MODEL_TYPE, RADIO_SO400M_AUX_CONFIG,
                     VLXSeek15Config)

TINY_TEXT = dict(
    vocab_size=248320, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
    rms_norm_eps=1e-6, linear_conv_kernel_dim=4, linear_key_head_dim=16,
    linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
    layer_types=["linear_attention"] * 3 + ["full_attention"], max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                     "partial_rotary_factor": 0.25, "mrope_section": [1, 1, 0],
                     "mrope_interleaved": True},
    tie_word_embeddings=False)
TINY_VISION = dict(depth=2, hidden_size=32, hidden_act="gelu_pytorch_tanh", intermediate_size=64,
                   num_heads=2, in_channels=3, patch_size=16, spatial_merge_size=2,
                   temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64)
TINY_RADIO = dict(embed_dim=32, depth=4, num_heads=2, mlp_dim=64)
TINY_SIMPLE_FPN_CHANNELS = 16
# Qwen3.5's image processor values [CONFIG]; the reference passes min/max pixels itself.
QWEN35_PREPROCESSOR: Dict[str, Any] = {
    "image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True,
    "do_normalize": True, "do_convert_rgb": True, "resample": 3,
    "rescale_factor": 0.00392156862745098, "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5], "size": {"shortest_edge": 3136, "longest_edge": 4194304},
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
}
END_OF_TEXT_ID, IM_END_ID = 248044, 248046


def tiny_config_dict() -> Dict[str, Any]:
    """The ``config.json`` content of a tiny 1.5 checkpoint."""
    aux_config = copy.deepcopy(RADIO_SO400M_AUX_CONFIG)
    aux_config["args"]["cpe_max_size"] = 256  # 16 x 16 position table
    aux = 4 * TINY_RADIO["embed_dim"]
    return {
        "architectures": ["VLXSeek1_5ForCausalLM"],
        "model_type": MODEL_TYPE,
        "text_config": copy.deepcopy(TINY_TEXT),
        "vision_config": dict(TINY_VISION),
        "image_token_id": IMAGE_TOKEN_ID, "video_token_id": 248057,
        "vision_start_token_id": 248053, "vision_end_token_id": 248054,
        "tie_word_embeddings": False,
        "mm_vision_tower": "Qwen3.5-tiny", "mm_vision_tower_aux": "c-radio-v4-tiny",
        "vision_aux_config": aux_config,
        "vlxseek_aux_vision_config": dict(TINY_RADIO),
        "mm_hidden_size": TINY_VISION["out_hidden_size"],
        "mm_projector_type": "identity", "mm_projector_aux_type": "mlp2x_gelu",
        "mm_object_hidden_size": aux + 4 * TINY_SIMPLE_FPN_CHANNELS,
        "mm_use_vision_tower_object_feature": True, "mm_use_simpleFPN_for_vt": True,
        "mm_simpleFPN_out_channels_for_vt": TINY_SIMPLE_FPN_CHANNELS,
        "mm_use_simpleFPN_for_vt_aux": False, "mm_object_feature_combination": "concat",
        "mm_add_pos_embed": True, "mm_roi_output_size": 7, "mm_roi_algined": False,
        "mm_bbox_order_mode": "none", "vlxseek_random_weights": True,
    }


def make_tiny_model(directory: str, seed: int = 0, **overrides: Any) -> str:
    """Write a random tiny VLX-Seek 1.5 checkpoint to ``directory`` and return its path.

    Args:
        directory: created if needed; existing files of the same names are replaced.
        seed: torch seed of the random weights.
        overrides: top-level ``config.json`` keys replacing :func:`tiny_config_dict`'s (e.g.
            another ``mm_object_feature_combination`` with its ``mm_object_hidden_size``).

    Raises:
        CheckpointError: the resulting config is refused (see :func:`.config.validate_config`).
    """
    from transformers import GenerationConfig

    from ...errors import CheckpointError
    from .checkpoint import save_model
    from .config import validate_config
    from .modeling import VLXSeek15ForCausalLM
    from .tokenizer import build_vlx_seek_15_tokenizer

    os.makedirs(directory, exist_ok=True)
    torch.manual_seed(seed)
    config = VLXSeek15Config(**{**tiny_config_dict(), **overrides})
    problems = validate_config(config)
    if problems:
        raise CheckpointError("tiny config refused: " + "; ".join(problems))
    model = VLXSeek15ForCausalLM(config).eval()
    with torch.no_grad():
        # Qwen3.5 initialises its RMSNorm weights to 0 (norm scale 1 + w) and the aux tower's
        # table/tokens may come out zero; random values exercise every weight in the tests.
        for name, param in model.named_parameters():
            if param.requires_grad and not bool(param.any()) and "norm" not in name:
                param.normal_(0.0, 0.02)
    save_model(model.to(torch.bfloat16), directory)
    build_vlx_seek_15_tokenizer().save_pretrained(directory)
    with open(os.path.join(directory, "preprocessor_config.json"), "w", encoding="utf-8") as fh:
        json.dump(QWEN35_PREPROCESSOR, fh, indent=2)
    GenerationConfig(do_sample=False, eos_token_id=[IM_END_ID, END_OF_TEXT_ID],
                     pad_token_id=END_OF_TEXT_ID).save_pretrained(directory)
    return directory
