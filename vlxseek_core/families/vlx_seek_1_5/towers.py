"""VLX-Seek 1.5 vision towers (vlx-seek-1.5.md §2.1-2.2, §3).

* :class:`PrimaryTower` = ``vision_tower``: the stock transformers ``Qwen3_5VisionModel`` stored
  as ``visual`` (keys ``model.vision_tower.visual.*`` = stock ``model.visual.*``). Its merger
  output is both the image tokens and, reshaped to NCHW, the single stride-32 map of the region
  path (no intermediate blocks, no window order).
* :class:`RadioAuxTower` = ``vision_tower_aux``: C-RADIOv4 computed by timm's
  ``naflexvit_so400m_patch16_radio_v4`` (equal to the reference's tower to 1.9e-14, §3.6), plus the
  reference's input resize and bf16-rounded input conditioner. On disk the reference keys
  ``model.vision_tower_aux.image_tower.radio_model.*`` are kept: :func:`radio_from_reference`
  maps them on load (timm's own ``checkpoint_filter_fn``), :func:`radio_to_reference` back on
  save.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionModel

from ...errors import CheckpointError
from .config import VLXSeek15Config, radio_dims, radio_out_indices

RADIO_REFERENCE_PREFIX = "model.vision_tower_aux.image_tower."
"""Prefix of the aux tower's reference keys; below it they start with ``radio_model.``."""
RADIO_INTERNAL_PREFIX = "model.vision_tower_aux."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI-CLIP constants the reference's conditioner is created from (replaced on load)."""


class PrimaryTower(nn.Module):
    """``vision_tower`` of the reference (``Qwen3_5_VlVisionTower``), holding ``visual``."""

    def __init__(self, vision_config):
        super().__init__()
        self.visual = Qwen3_5VisionModel._from_config(vision_config)

    @property
    def config(self):
        return self.visual.config

    def forward(self, pixel_values: torch.Tensor,
                grid_thw: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Encode images (§2.1-2.2).

        Args:
            pixel_values: ``[sum(t·h·w), 3·temporal·patch²]`` processor rows (cast to the tower
                dtype here).
            grid_thw: long ``[B, 3]`` ``(t, grid_h, grid_w)`` in patches, one row per image.

        Returns:
            ``(tokens, maps)`` per image: merger rows ``[t·h·w/4, out_hidden]`` (the image
            tokens, before ``mm_projector``) and the same rows as an NCHW map
            ``[t, out_hidden, grid_h/2, grid_w/2]`` of stride 32 px in the Qwen-resized image
            (merger rows are in raster order of 2×2 patch blocks), tower dtype.
        """
        out = self.visual(pixel_values.to(self.visual.dtype), grid_thw=grid_thw)
        merge = self.visual.spatial_merge_size
        sizes = [int(t * h * w) // merge ** 2 for t, h, w in grid_thw.tolist()]
        tokens = list(out.pooler_output.split(sizes))
        maps = [rows.view(int(t), int(h) // merge, int(w) // merge, -1).permute(0, 3, 1, 2)
                .contiguous() for rows, (t, h, w) in zip(tokens, grid_thw.tolist())]
        return tokens, maps


def aux_input_size(height: int, width: int, patch: int = 16) -> Tuple[int, int]:
    """The aux tower's input size (§3.2): nearest multiples of ``patch`` with Python ``round``
    (ties to even: 520 → 512), at least one patch."""
    return (max(int(round(height / patch) * patch), patch),
            max(int(round(width / patch) * patch), patch))


def bf16_rounded(values: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to bfloat16 and returned as float32 (§3.2: the reference's
    conditioner constants are bf16)."""
    return values.to(torch.bfloat16).to(torch.float32)


def build_radio_vit(config: VLXSeek15Config, dims: Dict[str, int] = None) -> nn.Module:
    """timm ``naflexvit_so400m_patch16_radio_v4`` sized from the config (§3.1, §3.6).

    Raises:
        CheckpointError: sizes timm cannot build exactly (MLP width not reproduced), or a
            timm older than 1.0.31, which lacks this architecture.
    """
    import timm

    d = dims or radio_dims(config)
    if "naflexvit_so400m_patch16_radio_v4" not in timm.list_models("naflexvit_*radio*"):
        # timm < 1.0.31 would raise a bare "Unknown model"; say what to install instead.
        raise CheckpointError(
            f"the VLX-Seek 1.5 aux tower (C-RADIOv4) needs timm >= 1.0.31, found "
            f"{timm.__version__}: pip install 'timm>=1.0.31'")
    vit = timm.create_model(
        "naflexvit_so400m_patch16_radio_v4", pretrained=False, num_classes=0,
        embed_dim=d["embed_dim"], depth=d["depth"], num_heads=d["num_heads"],
        mlp_ratio=d["mlp_dim"] / d["embed_dim"], reg_tokens=d["prefix_tokens"] - 1,
        pos_embed_grid_size=(d["grid"], d["grid"]))
    got = vit.blocks[0].mlp.fc1.out_features
    if got != d["mlp_dim"]:
        raise CheckpointError(f"aux tower mlp_dim {d['mlp_dim']} is not reproducible by timm "
                              f"(got {got}); choose an mlp_dim that embed_dim divides")
    # The reference's patch projection has no bias; timm's zero bias must stay zero.
    vit.embeds.proj.bias.requires_grad_(False)
    return vit


class RadioAuxTower(nn.Module):
    """``vision_tower_aux`` of the reference (``CRadioV4AuxEncoder``), always in eval mode.

    Attributes:
        vit: timm NaFlexVit (keys ``model.vision_tower_aux.vit.*`` inside this project).
        norm_mean, norm_std: float32 buffers ``[3, 1, 1]`` as stored in the checkpoint
            (``radio_model.input_conditioner.norm_{mean,std}``); used bf16-rounded.
        summary_idxs: int64 buffer kept for the checkpoint (unused for features).
        out_indices: the four blocks read (§3.3).
    """

    def __init__(self, config: VLXSeek15Config):
        super().__init__()
        dims = radio_dims(config)
        self.patch_size = dims["patch_size"]
        self.vit = build_radio_vit(config, dims)
        self.register_buffer("norm_mean", torch.tensor(CLIP_MEAN).view(3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(CLIP_STD).view(3, 1, 1))
        aux = config.vision_aux_config
        aux = aux.to_dict() if hasattr(aux, "to_dict") else aux
        summary = aux.get("summary_idxs") or [0, 1]
        self.register_buffer("summary_idxs", torch.tensor(summary, dtype=torch.int64))
        self.out_indices = radio_out_indices(dims["depth"])
        self.vit.eval()

    def train(self, mode: bool = True):
        """Training mode for the module tree, but the ViT stays in eval mode: the reference's
        tower differs in training mode (random position-table crops, §3.4)."""
        super().train(mode)
        self.vit.eval()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.embeds.proj.weight.dtype

    def condition(self, image: torch.Tensor) -> torch.Tensor:
        """Resize and normalise an aux image as the reference (§3.2).

        Args:
            image: ``[1, 3, H, W]`` RGB in ``[0, 1]`` at the original resolution (any float
                dtype; the aux processor output).

        Returns:
            ``[1, 3, H16, W16]`` in the tower dtype, ``(H16, W16) =``
            :func:`aux_input_size` ``(H, W)``: cast to the tower dtype first, bilinear
            antialiased resize (skipped when already a multiple; on CPU a half-precision
            tower resizes in fp32), then ``(x − mean) / std`` with bf16-rounded constants,
            each op in the tower dtype (bf16 in the reference).
        """
        x = image.to(self.dtype)
        size = aux_input_size(x.shape[-2], x.shape[-1], self.patch_size)
        if tuple(x.shape[-2:]) != size:
            # torch has no half-precision antialiased kernel on CPU: resize in fp32 there and
            # round back (on CUDA the resize runs in the tower dtype, as in the reference)
            low_cpu = x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)
            x = F.interpolate(x.float() if low_cpu else x, size=size, mode="bilinear",
                              align_corners=False, antialias=True).to(x.dtype)
        mean = bf16_rounded(self.norm_mean.float()).to(x.dtype)
        std = bf16_rounded(self.norm_std.float()).to(x.dtype)
        return (x - mean) / std

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        """``[1, 3, H, W]`` image in ``[0, 1]`` → the four maps ``[1, C, H16/16, W16/16]`` after
        blocks :attr:`out_indices` (no final norm, prefix tokens dropped; tower dtype)."""
        return self.vit.forward_intermediates(
            self.condition(image), indices=self.out_indices, norm=False, output_fmt="NCHW",
            intermediates_only=True)


_BUFFERS = {"input_conditioner.norm_mean": "norm_mean",
            "input_conditioner.norm_std": "norm_std", "summary_idxs": "summary_idxs"}


def radio_from_reference(ref: Dict[str, torch.Tensor],
                         vit: nn.Module) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Reference aux keys → :class:`RadioAuxTower` keys (§3.6), for loading.

    Args:
        ref: keys below ``model.vision_tower_aux.image_tower.`` (``radio_model.*``).
        vit: the tower's timm model (timm's filter reads its layout).

    Returns:
        ``(state, unexpected)``: tower keys (``vit.*``, ``norm_mean``, ``norm_std``,
        ``summary_idxs``) and the reference keys no rule maps.
    """
    from timm.models.naflexvit import checkpoint_filter_fn

    state, vit_part, unexpected = {}, {}, []
    for key, tensor in ref.items():
        tail = key[len("radio_model."):] if key.startswith("radio_model.") else None
        if tail in _BUFFERS:
            state[_BUFFERS[tail]] = tensor
        elif tail is not None and tail.startswith("model.") and (
                tail.startswith("model.blocks.") or tail in _PATCH_KEYS):
            vit_part[key] = tensor
        else:
            unexpected.append(key)
    if "radio_model.model.patch_generator.embedder.weight" in vit_part:
        converted = checkpoint_filter_fn(vit_part, vit)
        if converted.get("embeds.reg_token") is not None and not converted[
                "embeds.reg_token"].numel():
            del converted["embeds.reg_token"]  # one prefix token: no registers
        state.update({f"vit.{k}": v for k, v in converted.items()})
    else:
        unexpected += [k for k in vit_part if not k.startswith("radio_model.model.blocks.")]
        state.update({f"vit.{k[len('radio_model.model.'):]}": v for k, v in vit_part.items()
                      if k.startswith("radio_model.model.blocks.")})
    return state, unexpected


_PATCH_KEYS = {"model.patch_generator.embedder.weight", "model.patch_generator.pos_embed",
               "model.patch_generator.cls_token.token"}


def radio_to_reference(state: Dict[str, torch.Tensor],
                       check_bias: bool = True) -> Dict[str, torch.Tensor]:
    """:class:`RadioAuxTower` keys → reference keys below ``image_tower.`` (for saving).

    Inverse of :func:`radio_from_reference`: the projection goes back to the channel-major
    ``[C, 3·p·p]`` layout, the ``[1, g, g, C]`` table to ``[1, g², C]``, cls + registers to
    ``cls_token.token [prefix, C]``.

    Raises:
        CheckpointError: ``check_bias`` and the patch projection bias is not zero (the reference
            has none; ``check_bias=False`` for shape listings of unloaded models).
    """
    out: Dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in _BUFFERS.values():
            tail = next(k for k, v in _BUFFERS.items() if v == key)
            out[f"radio_model.{tail}"] = tensor
        elif key.startswith("vit.blocks."):
            out[f"radio_model.model.{key[len('vit.'):]}"] = tensor
    gen = "radio_model.model.patch_generator."
    weight = state["vit.embeds.proj.weight"]
    bias = state.get("vit.embeds.proj.bias")
    if check_bias and bias is not None and not bias.is_meta and bool((bias != 0).any()):
        raise CheckpointError("the aux patch projection has a non-zero bias, which the "
                              "reference checkpoint format cannot store")
    patch = int(round((weight.shape[1] // 3) ** 0.5))
    out[gen + "embedder.weight"] = (weight.reshape(weight.shape[0], patch, patch, 3)
                                    .permute(0, 3, 1, 2).reshape(weight.shape[0], -1))
    table = state["vit.embeds.pos_embed"]
    out[gen + "pos_embed"] = table.reshape(1, -1, table.shape[-1])
    tokens = [state["vit.embeds.cls_token"][0]]
    if "vit.embeds.reg_token" in state:
        tokens.append(state["vit.embeds.reg_token"][0])
    out[gen + "cls_token.token"] = torch.cat(tokens, dim=0)
    return {k: v.contiguous() for k, v in out.items()}
