"""VLM-FO1 configuration (spec §2.2) and the auxiliary DaViT configuration (spec §2.5).

Every architecture choice is read from the checkpoint's ``config.json`` (``mm_*`` keys) with the
reference code's defaults. Two keys are vlxseek extensions so that tiny test models can be built
from a config: ``vlxseek_aux_vision_config`` (Florence-2/DaViT sizes; absent → chosen from the
``mm_vision_tower_aux`` name as the reference does) and ``vlxseek_simple_fpn_channels`` (absent →
the reference's hard-coded 512). ``vlxseek_random_weights: true`` marks random checkpoints.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from transformers import Florence2VisionConfig, Qwen2_5_VLConfig

from .errors import CheckpointError

MODEL_TYPE = "omchat_qwen2_5_vl"

# Reference DaViT variants (spec §2.5); Florence2VisionConfig field names.
DAVIT_VARIANTS: Dict[str, Dict[str, Any]] = {
    "davit-large": dict(embed_dim=[256, 512, 1024, 2048], num_heads=[8, 16, 32, 64],
                        num_groups=[8, 16, 32, 64], depths=[1, 1, 9, 1]),
    "davit-base": dict(embed_dim=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
                       num_groups=[4, 8, 16, 32], depths=[1, 1, 9, 1]),
}
_DAVIT_COMMON = dict(patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2],
                     patch_padding=[3, 1, 1, 1], patch_prenorm=[False, True, True, True],
                     window_size=12, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0)

# Reference getattr defaults (spec §2.2).
MM_DEFAULTS: Dict[str, Any] = {
    "mm_projector_type": "linear",
    "mm_projector_aux_type": "linear",
    "mm_use_vision_tower_region_feature": False,
    "mm_use_simpleFPN_for_vt": False,
    "mm_region_feature_combination": "concat",
    "mm_apply_position_embedding": True,
    "mm_pos_embedding_strategy": "bbox_based",
    "mm_apply_region_layer_norm": False,
    "mm_roi_output_size": 7,
    "mm_use_vt_region_feature_only": False,
    "mm_use_region_index_token": False,
    "aux_image_size": 768,
    "tokenizer_model_max_length": None,
    "vlxseek_simple_fpn_channels": 512,
    "vlxseek_random_weights": False,
}
AUX_ASPECT_MODES = ("squash", "dynamic", "dynamic_square")

VLM_FO1_3B_CONFIG: Dict[str, Any] = dict(
    hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
    num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0,
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, tie_word_embeddings=True,
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       out_hidden_size=2048, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    mm_vision_tower="Qwen/Qwen2.5-VL-3B-Instruct", mm_vision_tower_aux="/ckpt/davit-large.pth",
    mm_hidden_size=2048, mm_projector_type="identity", mm_projector_aux_type="mlp2x_gelu",
    mm_region_hidden_size=5888, mm_use_vision_tower_region_feature=True,
    mm_use_simpleFPN_for_vt=True, mm_region_feature_combination="concat",
    mm_apply_position_embedding=True, mm_pos_embedding_strategy="bbox_based",
    mm_apply_region_layer_norm=False, mm_roi_output_size=7, mm_use_region_index_token=True,
    aux_image_size=768, aux_image_aspect_ratio="squash")
"""The most likely ``config.json`` of ``VLM-FO1_Qwen2.5-VL-3B-v01`` (spec §2.2, "likely" values:
identity image projector, ``mlp2x_gelu`` connector, SimpleFP, no region LayerNorm). For shape
tests and random-weight benchmarks only: a real checkpoint's own config is always read."""


class VLMFO1Config(Qwen2_5_VLConfig):
    """``OmChatQwen25VLConfig`` of the reference: Qwen2.5-VL config plus ``mm_*`` keys.

    Loads the reference's ``config.json`` as is (text keys at top level are moved into
    ``text_config`` by transformers).
    """

    model_type = MODEL_TYPE

    def mm(self, key: str) -> Any:
        """A ``mm_*``/aux key with the reference default when absent."""
        return mm_value(self, key, MM_DEFAULTS)


def mm_value(config: Any, key: str, defaults: Dict[str, Any]) -> Any:
    """``getattr(config, key, defaults.get(key))``: a ``config.json`` key with the reference
    code's ``getattr`` default (shared by the model families' ``config.mm``)."""
    return getattr(config, key, defaults.get(key))


def davit_config(config: VLMFO1Config) -> Florence2VisionConfig:
    """The auxiliary DaViT's Florence-2 vision config (spec §2.5, §8).

    Raises:
        CheckpointError: neither ``vlxseek_aux_vision_config`` nor a known DaViT name.
    """
    explicit = getattr(config, "vlxseek_aux_vision_config", None)
    if explicit:
        sizes = dict(explicit)
    else:
        name = os.path.basename(str(config.mm("mm_vision_tower_aux") or "")).lower()
        name = name[:-4] if name.endswith(".pth") else name
        if "davit" not in name or name not in DAVIT_VARIANTS:
            raise CheckpointError(
                f"mm_vision_tower_aux={config.mm('mm_vision_tower_aux')!r} does not name a known "
                f"DaViT ({', '.join(DAVIT_VARIANTS)})")
        sizes = DAVIT_VARIANTS[name]
    return Florence2VisionConfig(**{**_DAVIT_COMMON, **sizes})


def simple_fpn_channels(config: VLMFO1Config) -> int:
    """Output channels of each SimpleFP level (reference: 512)."""
    return int(config.mm("vlxseek_simple_fpn_channels"))


def region_feature_dims(config: VLMFO1Config) -> Dict[str, int]:
    """Channel widths of the HFRE branches (spec §2.6): aux, vt and their fusion.

    Raises:
        CheckpointError: ``mm_region_hidden_size`` disagrees with the towers, or
            ``mm_use_vt_region_feature_only`` without ``mm_use_vision_tower_region_feature``.
    """
    aux = sum(davit_config(config).embed_dim)
    vt = 0
    if config.mm("mm_use_vision_tower_region_feature"):
        if config.mm("mm_use_simpleFPN_for_vt"):
            vt = 4 * simple_fpn_channels(config)
        else:
            vt = len(config.vision_config.fullatt_block_indexes) * config.vision_config.hidden_size
    if config.mm("mm_use_vt_region_feature_only"):
        if not vt:
            # The reference's vt-only path reads the vt maps, which it then never gathers.
            raise CheckpointError("mm_use_vt_region_feature_only needs "
                                  "mm_use_vision_tower_region_feature (no vt features)")
        fused = vt
    elif config.mm("mm_region_feature_combination") == "concat":
        fused = aux + vt
    else:
        raise CheckpointError("only mm_region_feature_combination='concat' is implemented")
    declared = getattr(config, "mm_region_hidden_size", None)
    if declared is not None and int(declared) != fused:
        raise CheckpointError(
            f"mm_region_hidden_size={declared} but the towers give {aux} (aux) + {vt} (vt) = "
            f"{fused}")
    return {"aux": aux, "vt": vt, "fused": fused}


def validate_config(config: VLMFO1Config) -> List[str]:
    """Reasons the config cannot run the region pipeline (empty list = fine)."""
    problems = []
    if not config.mm("mm_use_region_index_token"):
        problems.append("mm_use_region_index_token must be true (spec §2.2)")
    aspect = getattr(config, "aux_image_aspect_ratio", None)
    if aspect not in AUX_ASPECT_MODES:
        problems.append(f"aux_image_aspect_ratio={aspect!r}; expected one of {AUX_ASPECT_MODES}")
    if config.mm("mm_pos_embedding_strategy") != "bbox_based":
        problems.append("only mm_pos_embedding_strategy='bbox_based' is implemented")
    try:
        dims = region_feature_dims(config)
        if config.mm("mm_apply_position_embedding") and dims["fused"] % 8:
            problems.append("mm_region_hidden_size must be divisible by 8 for the box embedding")
    except CheckpointError as exc:
        problems.append(str(exc))
    return problems
