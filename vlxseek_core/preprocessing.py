"""Image and box preprocessing of the reference ``prepare_inputs`` (spec §4.1, §7.5).

Frames, all ``xyxy`` pixels:

* *original*: the caller's image; proposals and returned boxes live here.
* *capped*: long side ≤ 2048 (``int`` truncation, each side ≥ 28, PIL BICUBIC).
* *aux*: the DaViT input (``squash`` 768×768, ``dynamic`` = capped, ``dynamic_square``).
* *vt*: the Qwen-resized image, ``grid × 14`` pixels.

Images with a side under 28 px are enlarged to ≥ 28 as the reference's ``load_image`` does, but
unlike the reference (which enlarges the image and leaves the boxes in the old frame) the boxes
are rescaled with the image, so original-pixel boxes keep pointing at the same content.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image

from .errors import InvalidImageError

MAX_LONG_SIDE = 2048
MIN_SIDE = 28
AUX_SQUARE_SIZES = (384, 448, 512, 576, 640, 704, 768, 832, 896, 960, 1024, 1280, 1536, 1792,
                    2048)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pil_rgb(image: Union[np.ndarray, Image.Image]) -> Image.Image:
    """Accept HWC uint8 RGB numpy (or HW grayscale) or a PIL image; return PIL RGB.

    Raises:
        InvalidImageError: wrong type, dtype, shape or an empty image.
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise InvalidImageError("image has zero width or height")
        # Already RGB: no copy (the pipeline passes the same image through several stages).
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array or PIL image, got {type(image)}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image dtype must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidImageError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image has zero width or height: shape {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image[..., :3]), mode="RGB")


def capped_size(width: int, height: int) -> Tuple[int, int]:
    """``(w, h)`` after the reference's 2048 cap and 28-pixel floor (spec §4.1.1–2)."""
    w, h = max(width, MIN_SIDE), max(height, MIN_SIDE)
    longer = max(w, h)
    if longer > MAX_LONG_SIDE:
        scale = MAX_LONG_SIDE / longer
        w, h = max(int(w * scale), MIN_SIDE), max(int(h * scale), MIN_SIDE)
    return w, h


def cap_image(image: Image.Image) -> Image.Image:
    """Resize (PIL BICUBIC) to :func:`capped_size`; unchanged if already within limits.

    In the reference's two steps, so the pixels are its own: a side under 28 px is first
    enlarged to 28 (``load_image``), then a long side over 2048 is capped.
    """
    w, h = image.size
    if w < MIN_SIDE or h < MIN_SIDE:
        image = image.resize((max(w, MIN_SIDE), max(h, MIN_SIDE)), Image.BICUBIC)
    size = capped_size(image.width, image.height)
    return image if size == image.size else image.resize(size, Image.BICUBIC)


def aux_target_size(width: int, height: int, mode: str, aux_size: int = 768) -> Tuple[int, int]:
    """``(w, h)`` of the auxiliary image for ``aux_image_aspect_ratio`` ``mode`` (spec §4.1.3).

    Raises:
        ValueError: unknown mode.
    """
    if mode == "squash":
        return aux_size, aux_size
    if mode == "dynamic":
        return width, height
    if mode == "dynamic_square":
        area = width * height
        side = min(AUX_SQUARE_SIZES, key=lambda s: abs(s * s - area))
        return side, side
    raise ValueError(f"unknown aux_image_aspect_ratio {mode!r}")


@dataclass
class PreparedImage:
    """Model inputs for one image and its boxes.

    Attributes:
        pixel_values: float32 ``[grid_h*grid_w, 1176]`` (Qwen processor).
        image_grid_thw: long ``[1, 3]``.
        aux_pixel_values: float32 ``[1, 3, H_aux, W_aux]``.
        aux_boxes: float32 ``[N, 4]`` aux-frame xyxy.
        vt_boxes: float32 ``[N, 4]`` vt-frame xyxy.
        original_size: ``(h, w)``; capped_size: ``(h, w)``.
    """

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    aux_pixel_values: torch.Tensor
    aux_boxes: torch.Tensor
    vt_boxes: torch.Tensor
    original_size: Tuple[int, int]
    capped_size: Tuple[int, int]


class ImagePreprocessor:
    """Both towers' preprocessing plus the box frames, configured from a checkpoint.

    Args:
        qwen_image_processor: a transformers Qwen2-VL image processor (PIL backend), loaded
            from the checkpoint's ``preprocessor_config.json`` so its min/max pixels apply.
        aux_mode: ``aux_image_aspect_ratio`` of the config.
        aux_size: side of the ``squash`` aux image; the reference's processor hard-codes 768
            whatever the config's ``aux_image_size`` says (spec §4.1), so keep the default.
    """

    def __init__(self, qwen_image_processor, aux_mode: str, aux_size: int = 768):
        from transformers import CLIPImageProcessorPil

        self.qwen = qwen_image_processor
        self.aux_mode = aux_mode
        self.aux_size = aux_size
        self.aux = CLIPImageProcessorPil(do_resize=False, do_center_crop=False, do_rescale=True,
                                         do_normalize=True, image_mean=list(IMAGENET_MEAN),
                                         image_std=list(IMAGENET_STD), resample=Image.BICUBIC)

    def __call__(self, image: Union[np.ndarray, Image.Image],
                 boxes_xyxy: np.ndarray) -> PreparedImage:
        """Prepare one image and its ``[N, 4]`` original-pixel boxes.

        Boxes are scaled with the image to the capped frame (also when a side under 28 px is
        enlarged, where the reference leaves them unscaled; see the module docstring), clipped
        to it, then mapped to the aux and vt frames.

        ``N = 0`` (an image asked about alone, spec §3.2) gives ``[0, 4]`` box tensors; the
        reference's own path requires a box (§7.4), this one does not.

        Raises:
            InvalidImageError: unusable image.
            ValueError: boxes cannot be reshaped to ``[N, 4]``.
        """
        pil = to_pil_rgb(image)
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        orig_w, orig_h = pil.size
        capped = cap_image(pil)
        cw, ch = capped.size
        scaled = boxes * np.array([cw / orig_w, ch / orig_h, cw / orig_w, ch / orig_h],
                                  dtype=np.float32)
        scaled = np.clip(scaled, 0, [cw, ch, cw, ch]).astype(np.float32)

        aw, ah = aux_target_size(cw, ch, self.aux_mode, self.aux_size)
        aux_img = capped if (aw, ah) == (cw, ch) else capped.resize((aw, ah), Image.BICUBIC)
        aux_pixels = self.aux(images=aux_img, return_tensors="pt")["pixel_values"]
        aux_boxes = scaled * np.array([aw / cw, ah / ch, aw / cw, ah / ch], dtype=np.float32)

        qwen = self.qwen(images=capped, return_tensors="pt")
        grid = qwen["image_grid_thw"]
        patch = int(getattr(self.qwen, "patch_size", 14))
        vt_h, vt_w = int(grid[0, 1]) * patch, int(grid[0, 2]) * patch
        vt_boxes = aux_boxes * np.array([vt_w / aw, vt_h / ah, vt_w / aw, vt_h / ah],
                                        dtype=np.float32)
        return PreparedImage(
            pixel_values=qwen["pixel_values"].float(), image_grid_thw=grid.long(),
            aux_pixel_values=aux_pixels.float(), aux_boxes=torch.from_numpy(aux_boxes),
            vt_boxes=torch.from_numpy(vt_boxes), original_size=(orig_h, orig_w),
            capped_size=(ch, cw))
