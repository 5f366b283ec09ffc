"""VLX-Seek 1.5 configuration (vlx-seek-1.5.md §1.3, §1.4, §3.1).

``VLXSeek15Config`` is transformers' ``Qwen3_5Config`` (``text_config``/``vision_config``) with
``model_type = "vlx_seek_1_5"``, the reference's ``mm_*`` keys (read with the reference code's
``getattr`` defaults through :meth:`VLXSeek15Config.mm`) and ``vision_aux_config`` (RADIOConfig
kwargs). One vlxseek extension, ``vlxseek_aux_vision_config`` (``embed_dim``, ``depth``,
``num_heads``, ``mlp_dim``), sizes a C-RADIO tower other than SO400M so that tiny test
checkpoints can be built; absent, the SO400M sizes of §3.1 apply (the reference hard-codes them).

Everything the reference cannot run is refused by :func:`validate_config` with the reason,
instead of building a model that crashes (or silently differs) at the first query.
"""
from __future__ import annotations

from typing import Any, Dict, List

from transformers import Qwen3_5Config

from ...config import mm_value
from ...errors import CheckpointError

MODEL_TYPE = "vlx_seek_1_5"
IMAGE_TOKEN_ID = 248056
"""``<|image_pad|>``: the id the reference hard-codes for image rows (§1.5)."""
OBJECT_FEATURE_TOKEN_ID = 248181
"""``<objfeat>`` after expansion: the id the reference hard-codes for region rows (§1.5)."""
COMBINATIONS = ("mean", "mean_aux_pos", "concat", "concat_aux_pos")
SEPARATE_MLP_IN, SEPARATE_MLP_OUT = 2048, 1024
"""Hard-coded dims of ``object_mlp``/``aux_object_mlp`` (``mm_use_separate_mlp_for_object``)."""
AUX_SIMPLE_FPN_CHANNELS = 1024
"""Channels per level of ``simple_fpn_aux`` (hard-coded in the reference, §2.3)."""

# Reference getattr defaults (§1.3).
MM_DEFAULTS: Dict[str, Any] = {
    "mm_projector_type": "linear",
    "mm_projector_aux_type": "linear",
    "mm_roi_output_size": 7,
    "mm_add_pos_embed": True,
    "mm_use_vision_tower_object_feature": False,
    "mm_use_simpleFPN_for_vt": False,
    "mm_simpleFPN_out_channels_for_vt": 512,
    "mm_use_simpleFPN_for_vt_aux": False,
    "mm_object_feature_combination": "mean",
    "mm_use_vt_object_feature_only": False,
    "mm_use_separate_mlp_for_object": False,
    "mm_roi_algined": False,
    "mm_obj_pooling_type": "mean",
    "mm_use_multi_scale_roi_align": False,
    "mm_apply_object_layer_norm": False,
    "mm_bbox_order_mode": "none",
    "mm_vitdet_window_size": None,
    "aux_image_size": 1024,
    "aux_image_aspect_ratio": "squash",
    "vlxseek_random_weights": False,
}

RADIO_VERSION = "c-radio_v4-so400m"
RADIO_TIMM_NAME = "vit_so400m_patch16_224"
RADIO_SO400M = dict(embed_dim=1152, depth=27, num_heads=16, mlp_dim=4304)
"""C-RADIOv4-SO400M sizes (§3.1)."""
RADIO_SO400M_AUX_CONFIG: Dict[str, Any] = {
    "args": {"model": RADIO_TIMM_NAME, "cpe_max_size": 2048, "num_cls_tokens": 2,
             "register_multiple": None, "cpe_num_registers": 8, "dtype": "bfloat16"},
    "version": RADIO_VERSION, "patch_size": 16, "max_resolution": 2048,
    "preferred_resolution": [512, 512], "summary_idxs": [0, 1],
}
"""A ``vision_aux_config`` for SO400M. The cls/register split is a guess [CONFIG, §7.2]: only
the total (10 prefix tokens, ``cls_token.token [10, 1152]``) is known, and the split changes no
feature."""

VLX_SEEK_15_10B_CONFIG: Dict[str, Any] = dict(
    text_config=dict(
        vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
        num_attention_heads=16, num_key_value_heads=4, head_dim=256, hidden_act="silu",
        rms_norm_eps=1e-6, linear_conv_kernel_dim=4, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_num_key_heads=16, linear_num_value_heads=32,
        layer_types=["linear_attention"] * 3 + ["full_attention"], max_position_embeddings=262144,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                         "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10],
                         "mrope_interleaved": True},
        tie_word_embeddings=False),
    vision_config=dict(depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh",
                       intermediate_size=4304, num_heads=16, in_channels=3, patch_size=16,
                       spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=4096,
                       num_position_embeddings=2304),
    image_token_id=IMAGE_TOKEN_ID, video_token_id=248057, vision_start_token_id=248053,
    vision_end_token_id=248054, tie_word_embeddings=False,
    mm_vision_tower="Qwen/Qwen3.5-9B", mm_vision_tower_aux="nvidia/C-RADIOv4-SO400M",
    vision_aux_config=RADIO_SO400M_AUX_CONFIG, mm_hidden_size=4096,
    mm_projector_type="identity", mm_projector_aux_type="mlp2x_gelu",
    mm_object_hidden_size=6656, mm_use_vision_tower_object_feature=True,
    mm_use_simpleFPN_for_vt=True, mm_simpleFPN_out_channels_for_vt=512,
    mm_use_simpleFPN_for_vt_aux=False, mm_object_feature_combination="concat",
    mm_add_pos_embed=True, mm_roi_output_size=7, mm_roi_algined=False, mm_bbox_order_mode="none")
"""A 10B-shaped config (§1.4, the concat/512 variant of ``vlx-seek-1.5-10b-keys.json``): the
Qwen3.5-9B text/vision sizes, C-RADIOv4-SO400M, primary SimpleFP at 512 channels, concat fusion
``D = 4608 + 2048 = 6656``. The ``mm_*`` values are a guess [CONFIG, §7.1]; for shape tests and
``inspect`` only: a real checkpoint's own config is always read."""
VLX_SEEK_15_10B_CONFIG["text_config"]["layer_types"] *= 8


class VLXSeek15Config(Qwen3_5Config):
    """``VLXSeek1_5Config`` of the reference: ``Qwen3_5Config`` plus ``mm_*`` keys (§1.2-1.3).

    Loads the reference's ``config.json`` as is; unknown top-level keys (``mm_*``,
    ``vision_aux_config``, an optional top-level ``hidden_size``) stay attributes.
    """

    model_type = MODEL_TYPE

    def mm(self, key: str) -> Any:
        """A ``mm_*``/aux key with the reference default when absent."""
        return mm_value(self, key, MM_DEFAULTS)

    def vision_tower_name(self) -> str:
        """``mm_vision_tower``, else ``vision_tower`` (reference fallback), else ``""``."""
        return str(getattr(self, "mm_vision_tower", None) or getattr(self, "vision_tower", None)
                   or "")

    def aux_tower_name(self) -> str:
        """``mm_vision_tower_aux``, else ``vision_tower_aux``, else ``""``."""
        return str(getattr(self, "mm_vision_tower_aux", None)
                   or getattr(self, "vision_tower_aux", None) or "")

    def top_level_hidden_size(self):
        """The top-level ``hidden_size`` the reference's ``linear`` projectors read (a Qwen3.5
        config has none unless ``config.json`` sets it, §1.3), or ``None``."""
        return self.__dict__.get("hidden_size")


def radio_dims(config: VLXSeek15Config) -> Dict[str, int]:
    """Sizes of the C-RADIO tower (§3.1): ``embed_dim``, ``depth``, ``num_heads``, ``mlp_dim``,
    ``patch_size``, ``grid`` (position table side, ``cpe_max_size / patch``) and
    ``prefix_tokens`` (cls + registers, the reference's ``ClsToken`` rule).

    Raises:
        CheckpointError: no ``vision_aux_config``, or one the reference refuses.
    """
    aux = getattr(config, "vision_aux_config", None)
    if hasattr(aux, "to_dict"):
        aux = aux.to_dict()
    if not isinstance(aux, dict):
        raise CheckpointError("vision_aux_config is required for the C-RADIO aux tower (§1.3)")
    args = aux.get("args") or {}
    version = aux.get("version", RADIO_VERSION)
    if version != RADIO_VERSION:
        raise CheckpointError(f"vision_aux_config.version={version!r}; only {RADIO_VERSION!r} "
                              "is supported (§1.3)")
    if args.get("model") != RADIO_TIMM_NAME:
        raise CheckpointError(f"vision_aux_config.args.model={args.get('model')!r}; the "
                              f"reference builds only {RADIO_TIMM_NAME!r}")
    patch = aux.get("patch_size") or 16
    if patch != 16:
        raise CheckpointError(f"vision_aux_config.patch_size={patch}; the SO400M ViT has 16")
    try:
        max_size = int(args["cpe_max_size"])
        cls = int(args["num_cls_tokens"])
        regs = args.get("cpe_num_registers") or 0
        multiple = args.get("register_multiple") or 0
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"vision_aux_config.args needs cpe_max_size and num_cls_tokens "
                              f"(integers): {exc}") from None
    if not regs and multiple:
        regs = int(multiple) - cls % int(multiple)
    if max_size % patch or max_size < patch or cls < 1:
        raise CheckpointError(f"vision_aux_config.args: cpe_max_size {max_size} must be a "
                              f"positive multiple of {patch}, num_cls_tokens >= 1")
    sizes = dict(RADIO_SO400M)
    sizes.update(getattr(config, "vlxseek_aux_vision_config", None) or {})
    if sizes["embed_dim"] % sizes["num_heads"]:
        raise CheckpointError(f"aux tower embed_dim {sizes['embed_dim']} is not divisible by "
                              f"num_heads {sizes['num_heads']}")
    return dict(sizes, patch_size=patch, grid=max_size // patch, prefix_tokens=cls + int(regs))


def radio_out_indices(depth: int) -> List[int]:
    """Blocks whose outputs are the four aux maps (§3.3): ``round((i+1)·depth/4) − 1`` with
    Python rounding, the last forced to ``depth − 1`` (``[6, 13, 19, 26]`` for 27)."""
    indices = [round((i + 1) * depth / 4) - 1 for i in range(4)]
    indices[-1] = depth - 1
    return indices


def object_feature_dims(config: VLXSeek15Config) -> Dict[str, int]:
    """Channel widths of the HFRE (§2.3-2.4, the reference's module arguments).

    Returns:
        ``aux`` (aux branch width: 4 × aux width, or 4 × 1024 with the aux SimpleFP), ``vt``
        (primary branch width after its optional projector), ``vt_projector_in`` (input of
        ``vision_tower_object_feature_projector``: ``out_hidden_size`` with primary SimpleFP,
        else ``4 × vision hidden_size`` as the reference computes it) and ``fused``
        (``mm_object_hidden_size``).

    Raises:
        CheckpointError: widths that the reference cannot combine (it would crash), a
            configuration it cannot run, or ``mm_object_hidden_size`` absent or not
            divisible by 8.
    """
    mm = config.mm
    fused = getattr(config, "mm_object_hidden_size", None)
    if not isinstance(fused, int) or fused < 8 or fused % 8:
        raise CheckpointError(f"mm_object_hidden_size={fused!r} must be a positive multiple of 8 "
                              "(the box embedding splits it into 4 sine/cosine blocks, §2.4)")
    if not mm("mm_use_vision_tower_object_feature"):
        # encode_objects' aux-only branch reads a "last_feat" entry the C-RADIO tower never
        # returns (KeyError in the reference)
        raise CheckpointError("mm_use_vision_tower_object_feature must be true: the reference's "
                              "aux-only object path crashes (KeyError 'last_feat')")
    if mm("mm_apply_object_layer_norm"):
        raise CheckpointError("mm_apply_object_layer_norm=true is refused: the reference never "
                              "creates the norm modules and crashes (§1.3, §2.4)")
    combination = mm("mm_object_feature_combination")
    if combination not in COMBINATIONS:
        raise CheckpointError(f"mm_object_feature_combination={combination!r}; expected one of "
                              f"{COMBINATIONS}")
    vision = config.vision_config
    aux = 4 * (AUX_SIMPLE_FPN_CHANNELS if mm("mm_use_simpleFPN_for_vt_aux")
               else radio_dims(config)["embed_dim"])
    mean = combination.startswith("mean")
    if mm("mm_use_simpleFPN_for_vt"):
        vt_in = vision.out_hidden_size
        vt = 4 * int(mm("mm_simpleFPN_out_channels_for_vt"))
    else:
        vt_in = 4 * vision.hidden_size
        vt = fused if mean else vision.out_hidden_size
        if mean and vt_in != vision.out_hidden_size:
            raise CheckpointError(
                f"mean fusion without mm_use_simpleFPN_for_vt feeds the {vision.out_hidden_size}"
                f"-channel map to a projector built for 4 x vision hidden_size = {vt_in}: the "
                "reference crashes")
    if mm("mm_use_vt_object_feature_only"):
        want, why = vt, "primary (vt-only)"
    elif mean:
        if aux != vt:
            raise CheckpointError(f"mean fusion needs equal widths; aux branch {aux}, primary "
                                  f"branch {vt}")
        want, why = aux, "mean of aux and primary"
    elif mm("mm_use_separate_mlp_for_object"):
        if aux != SEPARATE_MLP_IN or vt != SEPARATE_MLP_IN:
            raise CheckpointError(f"mm_use_separate_mlp_for_object: the reference's MLPs take "
                                  f"{SEPARATE_MLP_IN} channels, the branches give {aux} (aux) "
                                  f"and {vt} (primary)")
        want, why = 2 * SEPARATE_MLP_OUT, "concat of the separate MLPs"
    else:
        want, why = aux + vt, f"concat {aux} (aux) + {vt} (primary)"
    if fused != want:
        raise CheckpointError(f"mm_object_hidden_size={fused} but the towers give {want} "
                              f"({why})")
    return {"aux": aux, "vt": vt, "vt_projector_in": vt_in, "fused": fused}


def projector_dims(config: VLXSeek15Config) -> Dict[str, tuple]:
    """Type and widths of ``mm_projector`` and ``mm_projector_aux`` (§1.3, §2.5).

    Returns:
        ``{"image": (kind, in, out), "object": (kind, in, out)}`` for
        :func:`vlxseek_core.hfre.build_projector`. As in the reference, the image projector
        (``linear``/``mlpNx_gelu``) maps ``mm_hidden_size`` → the top-level ``hidden_size``;
        the aux ``linear`` maps D → top-level ``hidden_size``, the aux ``mlpNx_gelu`` D → text
        ``hidden_size``.

    Raises:
        CheckpointError: a projector reads a top-level ``hidden_size`` or ``mm_hidden_size``
            that the config lacks (the reference fails), ``mm_hidden_size`` is not the merger
            width, or an output is not the LLM width.
    """
    text = config.text_config.hidden_size
    top = config.top_level_hidden_size()
    merger = config.vision_config.out_hidden_size
    mm_hidden = getattr(config, "mm_hidden_size", None)
    if mm_hidden is not None and mm_hidden != merger:
        raise CheckpointError(f"mm_hidden_size {mm_hidden} differs from vision_config."
                              f"out_hidden_size {merger} (the image tokens' width)")
    out: Dict[str, tuple] = {}
    for name, key, width in (("image", "mm_projector_type", mm_hidden),
                             ("object", "mm_projector_aux_type",
                              getattr(config, "mm_object_hidden_size", None))):
        kind = str(config.mm(key))
        if kind == "identity":
            dims = (kind, width or merger, width or merger)
        elif kind == "linear" or name == "image":
            dims = (kind, width, top)
        else:
            dims = (kind, width, text)
        if None in dims:
            raise CheckpointError(f"{key}={kind!r} needs mm_hidden_size and a top-level "
                                  "hidden_size in config.json (the reference reads them)")
        if dims[2] != text:
            raise CheckpointError(f"{key}={kind!r} outputs {dims[2]} channels but the LLM "
                                  f"width is {text}")
        out[name] = dims
    return out


def validate_config(config: VLXSeek15Config) -> List[str]:
    """Reasons the config cannot run the 1.5 region pipeline (empty list = fine, §1.3)."""
    problems = []
    image_id = getattr(config, "image_token_id", IMAGE_TOKEN_ID)
    if image_id != IMAGE_TOKEN_ID:
        problems.append(f"image_token_id={image_id}; the reference expands images to "
                        f"{IMAGE_TOKEN_ID} and only that id works (§1.3)")
    vocab = config.text_config.vocab_size
    if vocab <= OBJECT_FEATURE_TOKEN_ID:
        problems.append(f"text_config.vocab_size {vocab} has no row for <objfeat> = "
                        f"{OBJECT_FEATURE_TOKEN_ID}")
    name = config.vision_tower_name().lower()
    vtype = str(getattr(config.vision_config, "model_type", "")).lower()
    if not ("qwen3.5" in name or "qwen3_5" in name or vtype == "qwen3_5"):
        problems.append(f"mm_vision_tower={config.vision_tower_name()!r} must name a Qwen3.5 "
                        "tower (contain 'qwen3.5' or 'qwen3_5', §1.3)")
    if "radio" not in config.aux_tower_name().lower():
        problems.append(f"mm_vision_tower_aux={config.aux_tower_name()!r} must name the C-RADIO "
                        "aux tower (contain 'radio'); without it there is no region path")
    if config.mm("mm_vitdet_window_size") is not None:
        problems.append("mm_vitdet_window_size must be unset (the reference refuses VitDet)")
    for check in (radio_dims, object_feature_dims, projector_dims):
        try:
            check(config)
        except CheckpointError as exc:
            problems.append(str(exc))
    return list(dict.fromkeys(problems))
