"""The WeDetect-Base-Uni network (spec ``vlx-seek-1.5.md`` §5): a YOLO-World-style, non-fusion
open-vocabulary detector whose "vocabulary" is a learned bank of prompt embeddings.

Layout (module names chosen so that the released checkpoint's own key names load unchanged,
except the backbone, which is timm's ConvNeXt and is renamed by
:mod:`~vlxseek_core.proposals.wedetect_checkpoint`):

* ``backbone`` — ``timm.create_model("convnext_base", features_only=True)`` (depths
  [3, 3, 27, 3], dims [128, 256, 512, 1024], LayerNorm eps 1e-6, LayerScale ``gamma``); its four
  stage outputs at strides 4/8/16/32 feed the neck. Never downloads weights.
* ``neck`` — CSPRepBiFPAN (YOLOv6 style; channels = a fixed list × ``neck_scale``, 1.0 for base):
  top-down BiFusion + BepC3 to strides 16 and 8, bottom-up to 16 and 32; outputs
  [128, 256, 512] channels at strides 8/16/32. Neck BatchNorms use PyTorch's defaults
  (eps 1e-5), as the reference builds them.
* ``bbox_head.head_module`` — per level: ``cls_preds`` (two 3×3 conv-BN-SiLU + 1×1 conv to
  ``embed_dims``), ``cls_contrasts`` (BatchNorm of that embedding, eps 1e-3, then the dot
  product with ``embeddings`` × exp(``logit_scale``) + ``bias``), ``reg_preds`` (two 3×3
  conv-BN-SiLU + 1×1 conv to 4 × ``reg_max`` DFL bins).
* ``embeddings`` — ``[num_prompts, embed_dims]`` learned prompts, used as stored (no L2 norm).

Everything here works in the 640×640 *letterbox* frame; mapping to the original image is done
by :mod:`~vlxseek_core.proposals.wedetect`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

__all__ = ["WeDetectConfig", "WeDetectUni", "BASE_CONFIG", "TINY_CONFIG"]

# YOLOv6 CSPRepBiFPAN channel list at scale 1.0; index 1..4 are the backbone's stage widths,
# 5..10 the neck's internal/output widths.
_NECK_CHANNELS = (64, 128, 256, 512, 1024, 256, 128, 128, 256, 256, 512)


@dataclass(frozen=True)
class WeDetectConfig:
    """Architecture hyper-parameters. :data:`BASE_CONFIG` is the released model.

    Attributes:
        depths, dims: ConvNeXt blocks / widths per stage (``dims`` must equal the neck's
            expected inputs ``int(c * neck_scale)`` for c in 128, 256, 512, 1024).
        neck_scale: multiplies the neck channel list (1.0 base, 1.5 large).
        neck_repeats: BepC3 depth ``n``; each RepBlock holds ``n // 2`` BottleRep units.
        cls_channels: hidden width of ``cls_preds`` (256 in the reference).
        embed_dims: prompt/embedding width (768).
        num_prompts: rows of ``embeddings`` (256 in the released "Uni" checkpoint).
        reg_max: DFL bins per box side (16).
        image_size: side of the square letterbox input (640 for base).
    """

    depths: Tuple[int, ...] = (3, 3, 27, 3)
    dims: Tuple[int, ...] = (128, 256, 512, 1024)
    neck_scale: float = 1.0
    neck_repeats: int = 12
    cls_channels: int = 256
    embed_dims: int = 768
    num_prompts: int = 256
    reg_max: int = 16
    image_size: int = 640

    #: Output strides of the three head levels (fixed by the architecture).
    strides = (8, 16, 32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if len(self.depths) != 4 or len(self.dims) != 4 or min(self.depths) < 1:
            raise ValueError(f"depths/dims must have 4 positive entries, got {self.depths}, "
                             f"{self.dims}")
        if tuple(self.dims) != tuple(self.neck_channel(i) for i in (1, 2, 3, 4)):
            raise ValueError(f"dims {self.dims} do not match the neck inputs for neck_scale "
                             f"{self.neck_scale}: {[self.neck_channel(i) for i in (1, 2, 3, 4)]}")
        for name in ("neck_repeats", "cls_channels", "embed_dims", "num_prompts", "reg_max"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")

    def neck_channel(self, i: int) -> int:
        """Entry ``i`` of the scaled YOLOv6 channel list (``int`` truncation as the reference)."""
        return int(_NECK_CHANNELS[i] * self.neck_scale)

    @property
    def head_channels(self) -> Tuple[int, int, int]:
        """Neck output widths at strides 8/16/32 (= head inputs; [128, 256, 512] for base)."""
        return self.neck_channel(6), self.neck_channel(8), self.neck_channel(10)

    def to_dict(self) -> Dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Dict) -> "WeDetectConfig":
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown WeDetect config keys: {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


#: The released WeDetect-Base-Uni architecture.
BASE_CONFIG = WeDetectConfig()
#: A few-MB variant with the same structure (tests, demos): every width ÷ 8, one block per
#: stage, one BottleRep per RepBlock, 8 prompts of width 32.
TINY_CONFIG = WeDetectConfig(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), neck_scale=0.125,
                             neck_repeats=2, cls_channels=16, embed_dims=32, num_prompts=8)


class ConvBNAct(nn.Module):
    """conv (no bias, padding k//2) → BatchNorm → ReLU/SiLU; child names ``conv``/``bn`` as in
    mmcv's ConvModule, which the checkpoint was saved from."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, act: str = "silu",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU() if act == "relu" else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _Unit(nn.Module):
    """YOLOv6's ConvBNReLU / ConvBNSiLU: a ConvBNAct stored under ``block`` (key names)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: str = "relu"):
        super().__init__()
        self.block = ConvBNAct(cin, cout, k, stride, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _BottleRep(nn.Module):
    """Two 3×3 SiLU units with a residual scaled by the learned scalar ``alpha`` ([1])."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = _Unit(ch, ch, 3, act="silu")
        self.conv2 = _Unit(ch, ch, 3, act="silu")
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.alpha * x


class _RepBlock(nn.Module):
    """``n // 2`` BottleReps: the first as ``conv1``, the rest (if more than one) in ``block``."""

    def __init__(self, ch: int, n: int) -> None:
        super().__init__()
        self.conv1 = _BottleRep(ch)
        units = max(n // 2, 1)
        self.block = nn.Sequential(*[_BottleRep(ch) for _ in range(units - 1)]) \
            if units > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.block(x) if self.block is not None else x


class _BepC3(nn.Module):
    """CSP block: ``cv3(cat(m(cv1(x)), cv2(x)))`` with hidden width ``cout // 2``."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        hidden = int(cout * 0.5)
        self.cv1 = _Unit(cin, hidden, 1, act="silu")
        self.cv2 = _Unit(cin, hidden, 1, act="silu")
        self.cv3 = _Unit(2 * hidden, cout, 1, act="silu")
        self.m = _RepBlock(hidden, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class _Upsample(nn.Module):
    """2× transposed conv (with bias) under ``upsample_transpose`` (key names)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(ch, ch, kernel_size=2, stride=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_transpose(x)


class _BiFusion(nn.Module):
    """Fuses the coarser top (upsampled), the same-stride ``mid`` and the finer ``low``
    (1×1 then strided 3×3) into ``cout`` channels at ``mid``'s stride."""

    def __init__(self, c_mid: int, c_low: int, cout: int) -> None:
        super().__init__()
        self.cv1 = _Unit(c_mid, cout, 1)
        self.cv2 = _Unit(c_low, cout, 1)
        self.cv3 = _Unit(cout * 3, cout, 1)
        self.upsample = _Upsample(cout)
        self.downsample = _Unit(cout, cout, 3, stride=2)

    def forward(self, top: torch.Tensor, mid: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.upsample(top), self.cv1(mid),
                                   self.downsample(self.cv2(low))), dim=1))


class CSPRepBiFPANNeck(nn.Module):
    """Neck: stage maps (strides 4, 8, 16, 32) → [P3, P4, P5] at strides 8/16/32."""

    def __init__(self, cfg: WeDetectConfig) -> None:
        super().__init__()
        c, n = cfg.neck_channel, cfg.neck_repeats
        self.reduce_layer0 = _Unit(c(4), c(5), 1)
        self.Bifusion0 = _BiFusion(c(3), c(2), c(5))
        self.Rep_p4 = _BepC3(c(5), c(5), n)
        self.reduce_layer1 = _Unit(c(5), c(6), 1)
        self.Bifusion1 = _BiFusion(c(2), c(1), c(6))
        self.Rep_p3 = _BepC3(c(6), c(6), n)
        self.downsample2 = _Unit(c(6), c(7), 3, stride=2)
        self.Rep_n3 = _BepC3(c(6) + c(7), c(8), n)
        self.downsample1 = _Unit(c(8), c(9), 3, stride=2)
        self.Rep_n4 = _BepC3(c(5) + c(9), c(10), n)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        s4, s8, s16, s32 = feats
        top0 = self.reduce_layer0(s32)                                   # stride 32
        p4 = self.Rep_p4(self.Bifusion0(top0, s16, s8))                  # stride 16
        top1 = self.reduce_layer1(p4)                                    # stride 16
        p3 = self.Rep_p3(self.Bifusion1(top1, s8, s4))                   # stride 8
        n3 = self.Rep_n3(torch.cat((self.downsample2(p3), top1), 1))     # stride 16
        n4 = self.Rep_n4(torch.cat((self.downsample1(n3), top0), 1))     # stride 32
        return [p3, n3, n4]


class _Contrast(nn.Module):
    """BatchNorm on the region embedding + the scalar ``logit_scale`` (log) and ``bias``."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(embed_dims, momentum=0.03, eps=0.001)
        self.bias = nn.Parameter(torch.zeros([]))
        self.logit_scale = nn.Parameter(torch.full([], -1.0))


def _branch(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(cin, hidden, 3, bn_eps=1e-3, bn_momentum=0.03),
                         ConvBNAct(hidden, hidden, 3, bn_eps=1e-3, bn_momentum=0.03),
                         nn.Conv2d(hidden, cout, 1))


class _HeadModule(nn.Module):
    def __init__(self, cfg: WeDetectConfig) -> None:
        super().__init__()
        chans = cfg.head_channels
        reg_hidden = max(16, chans[0] // 4, cfg.reg_max * 4)
        self.cls_preds = nn.ModuleList(_branch(c, cfg.cls_channels, cfg.embed_dims) for c in chans)
        self.reg_preds = nn.ModuleList(_branch(c, reg_hidden, 4 * cfg.reg_max) for c in chans)
        self.cls_contrasts = nn.ModuleList(_Contrast(cfg.embed_dims) for _ in chans)


class _BBoxHead(nn.Module):
    def __init__(self, cfg: WeDetectConfig) -> None:
        super().__init__()
        self.head_module = _HeadModule(cfg)


class WeDetectUni(nn.Module):
    """WeDetect-Uni detector on letterboxed pixels (no pre/post-processing here).

    Args:
        config: architecture (default :data:`BASE_CONFIG`). Weights are random (timm/PyTorch
            init) until a checkpoint is loaded.
    """

    def __init__(self, config: WeDetectConfig = BASE_CONFIG) -> None:
        super().__init__()
        import timm

        self.config = config
        # timm's ConvNeXt with the reference's depths/dims; features_only returns the four
        # stage maps. pretrained=False: the weights come from the WeDetect checkpoint only.
        self.backbone = timm.create_model("convnext_base", pretrained=False, features_only=True,
                                          depths=config.depths, dims=config.dims)
        self.neck = CSPRepBiFPANNeck(config)
        self.bbox_head = _BBoxHead(config)
        self.embeddings = nn.Parameter(torch.nn.functional.normalize(
            torch.randn(config.num_prompts, config.embed_dims), dim=-1))
        self.register_buffer("dfl_bins", torch.arange(config.reg_max, dtype=torch.float32),
                             persistent=False)

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Dense predictions for every (anchor point, prompt) pair.

        Args:
            pixels: float ``[B, 3, S, S]`` RGB in [0, 1] (``S = config.image_size``; any
                multiple of 32 works), the letterboxed image, no mean/std.

        Returns:
            ``(scores, boxes)``: scores ``[B, A, K]`` (sigmoid, the parameters' dtype) for
            ``A = Σ (S/s)²`` anchors over strides s = 8, 16, 32 (row-major per level, levels
            in that order) and ``K = num_prompts``; boxes ``[B, A, 4]`` xyxy in letterbox
            pixels (not clipped).
        """
        feats = self.neck(self.backbone(pixels))
        head = self.bbox_head.head_module
        all_logits, all_boxes = [], []
        for level, (feat, stride) in enumerate(zip(feats, self.config.strides)):
            b, _, h, w = feat.shape
            contrast = head.cls_contrasts[level]
            embed = contrast.norm(head.cls_preds[level](feat))                  # [B, E, h, w]
            logits = torch.einsum("bchw,kc->bkhw", embed, self.embeddings)
            logits = logits * contrast.logit_scale.exp() + contrast.bias        # [B, K, h, w]
            all_logits.append(logits.flatten(2).transpose(1, 2))                # [B, hw, K]
            # DFL: 4 sides × reg_max bins → expected bin index, in units of the stride
            dist = head.reg_preds[level](feat).reshape(b, 4, self.config.reg_max, h * w)
            dist = dist.permute(0, 3, 1, 2).softmax(-1)                         # [B, hw, 4, R]
            dist = (dist @ self.dfl_bins.to(dist.dtype)[:, None]).squeeze(-1) * stride
            ys, xs = torch.meshgrid(torch.arange(h, device=feat.device),
                                    torch.arange(w, device=feat.device), indexing="ij")
            centers = torch.stack(((xs.reshape(-1) + 0.5) * stride,
                                   (ys.reshape(-1) + 0.5) * stride), -1).to(dist.dtype)
            all_boxes.append(torch.cat((centers - dist[..., :2], centers + dist[..., 2:]), -1))
        return torch.cat(all_logits, 1).sigmoid(), torch.cat(all_boxes, 1)
