"""VLX-Seek 1.5 image and box preprocessing (spec vlx-seek-1.5 §2.1, §2.4, §3.2, §4.4).

Frames, all ``xyxy`` pixels:

* *original*: the caller's image; boxes come and results go in this frame. It is also the aux
  image (§3.2: no resize, no normalisation, no size cap), and the HFRE's aux boxes are in it.
* *vt*: the Qwen-resized image, ``grid × 16`` pixels (factor 32, 3136…4194304 pixels, §2.1).

Unlike VLM-FO1 the model sees the regions in a *model-side* order (``mm_bbox_order_mode``,
§4.4): :func:`model_order` is the one place that order is computed, here for the region
features and in :mod:`.family` for the ``<objK>`` remapping of questions and answers.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ...errors import CheckpointError
from ...preprocessing import PreparedImage, to_pil_rgb
from .box_order import BoxOrder, prepare_boxes
from .modeling import vt_boxes_from_original

MIN_PIXELS = 56 * 56
MAX_PIXELS = 2048 * 2048
"""The reference worker's processor keywords (§2.1); they override the file's ``size``."""


def model_order(boxes: np.ndarray, image_hw: Sequence[int], order_mode: str,
                max_boxes: Optional[int] = None) -> BoxOrder:
    """The model-side order of a frame's regions (§4.4).

    Args:
        boxes: ``[N, 4]`` xyxy in original-image pixels, caller order (the frame's proposals,
            already clipped and of positive size).
        image_hw: ``(H, W)`` of the original image.
        order_mode: the checkpoint's ``mm_bbox_order_mode``.
        max_boxes: the tokenizer's ``<objK>`` count, or ``None``.

    Raises:
        InvalidRequestError: as :func:`.box_order.prepare_boxes` (zero-size box after
            clipping, more than ``max_boxes`` boxes, unknown mode).
    """
    height, width = image_hw
    return prepare_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), (width, height),
                         order_mode, max_boxes=max_boxes)


def qwen_processor(settings: Mapping[str, Any]):
    """A ``Qwen2VLImageProcessor`` from ``preprocessor_config.json`` settings with the worker's
    ``min_pixels``/``max_pixels`` (§2.1), for callers without a checkpoint directory (the
    benchmarks build random models in memory; :func:`load_qwen_processor` reads the file).

    Args:
        settings: the file's keys, e.g. :data:`.tiny.QWEN35_PREPROCESSOR`.
    """
    from transformers import Qwen2VLImageProcessor

    kwargs = {k: v for k, v in settings.items() if k != "image_processor_type"}
    return Qwen2VLImageProcessor(**kwargs, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def resized_size(processor, width: int, height: int) -> Tuple[int, int]:
    """``(width, height)`` of the image the Qwen3.5 tower sees for a ``width × height`` frame,
    without running the processor (smart_resize, factor patch × merge, the worker's pixel
    budget, §2.1); the grid is this divided by the patch size.
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = int(processor.patch_size) * int(processor.merge_size)
    h, w = smart_resize(height, width, factor=factor, min_pixels=MIN_PIXELS,
                        max_pixels=MAX_PIXELS)
    return w, h


def load_qwen_processor(directory: str, vision_config):
    """The checkpoint's ``Qwen2VLImageProcessor`` (torchvision backend, as the reference) with
    the worker's ``min_pixels``/``max_pixels`` (§2.1).

    Raises:
        CheckpointError: unreadable ``preprocessor_config.json``, or patch/merge sizes that do
            not match ``vision_config`` (the image tokens would not fit the tower).
    """
    from transformers import Qwen2VLImageProcessor

    try:
        processor = Qwen2VLImageProcessor.from_pretrained(directory, min_pixels=MIN_PIXELS,
                                                          max_pixels=MAX_PIXELS)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise CheckpointError(f"cannot read preprocessor_config.json in {directory}: "
                              f"{type(exc).__name__}: {exc}") from exc
    want = (vision_config.patch_size, vision_config.spatial_merge_size,
            vision_config.temporal_patch_size)
    got = (processor.patch_size, processor.merge_size, processor.temporal_patch_size)
    if tuple(int(v) for v in got) != tuple(want):
        raise CheckpointError(f"{directory}/preprocessor_config.json: patch_size, merge_size, "
                              f"temporal_patch_size = {got}, but vision_config has {want}")
    return processor


class VLXSeek15Preprocessor:
    """Both towers' inputs and the box frames of one image (§2.1, §2.4, §3.2).

    Args:
        qwen_image_processor: from :func:`load_qwen_processor` (patch 16, merge 2).
        order_mode: the checkpoint's ``mm_bbox_order_mode``.

    Attributes:
        qwen: the Qwen2-VL processor; aux: the reference's aux processor
            (``CLIPImageProcessor`` without resize, crop or normalisation: RGB × 1/255).
    """

    def __init__(self, qwen_image_processor, order_mode: str):
        from transformers import CLIPImageProcessor

        self.qwen = qwen_image_processor
        self.order_mode = order_mode
        self.aux = CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=True,
                                      do_normalize=False, do_convert_rgb=True)

    def __call__(self, image: Union[np.ndarray, Image.Image],
                 boxes_xyxy: np.ndarray) -> PreparedImage:
        """Prepare one image and its ``[N, 4]`` original-pixel boxes (caller order).

        Returns:
            :class:`~vlxseek_core.preprocessing.PreparedImage`: ``pixel_values``
            ``[grid_h·grid_w, 1536]``, ``image_grid_thw`` ``[1, 3]``, ``aux_pixel_values``
            float32 ``[1, 3, H, W]`` in ``[0, 1]``, ``aux_boxes`` float32 ``[N, 4]`` original
            pixels and ``vt_boxes`` float32 ``[N, 4]`` vt pixels, both in **model order**
            (:func:`model_order`); ``original_size`` = ``capped_size`` = ``(H, W)`` (no cap).

        Raises:
            InvalidImageError: unusable image.
            InvalidRequestError: boxes :func:`model_order` refuses.
        """
        pil = to_pil_rgb(image)
        width, height = pil.size
        order = model_order(boxes_xyxy, (height, width), self.order_mode)
        boxes = torch.from_numpy(order.model_boxes.astype(np.float32))
        qwen = self.qwen(images=pil, return_tensors="pt")
        grid = qwen["image_grid_thw"].long()
        aux = self.aux(images=pil, return_tensors="pt")["pixel_values"].float()
        vt_boxes = vt_boxes_from_original(boxes, (height, width), grid,
                                          int(self.qwen.patch_size))
        return PreparedImage(pixel_values=qwen["pixel_values"].float(), image_grid_thw=grid,
                             aux_pixel_values=aux, aux_boxes=boxes, vt_boxes=vt_boxes,
                             original_size=(height, width), capped_size=(height, width))
