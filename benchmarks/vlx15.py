"""VLX-Seek 1.5 pieces of the latency benchmarks (bench_stages, bench_decode).

What differs from VLM-FO1 and is built here with the family's own code
(:mod:`vlxseek_core.families.vlx_seek_1_5`): the stand-in tokenizer (exact Qwen2 BPE, the 1.5
special-token ids; the real Qwen3.5 vocabulary is not available offline, so answer token
counts are approximations), the ``detection`` prompt with expanded ``<|image_pad|>`` /
``<objfeat>`` ids (§1.6, §4), the preprocessing (Qwen2VL processor with patch 16 and the
reference's pixel budget, the original image in ``[0, 1]`` for C-RADIO, boxes in model order,
§2.1, §3.2, §4.4), and ``encode_frame`` split into its stages (Qwen3.5 vision tower +
``mm_projector``, C-RADIO aux tower, HFRE + ``mm_projector_aux``; §2-3).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

MIN_PIXELS, MAX_PIXELS = 56 * 56, 2048 * 2048
"""The reference's processor keyword arguments (they override the file's ``size``, §2.1)."""
FACTOR = 32
"""smart_resize factor: patch 16 × spatial merge 2."""
FIRST_SPECIAL_ID = 248044
"""First added-token id of the 1.5 vocabulary (``<|endoftext|>``): label text is below it."""


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The offline 1.5 stand-in tokenizer (built once per process)."""
    from vlxseek_core.families.vlx_seek_1_5.tokenizer import build_vlx_seek_15_tokenizer

    return build_vlx_seek_15_tokenizer()


def resized_size(width: int, height: int) -> Tuple[int, int]:
    """``(width, height)`` of the image the Qwen3.5 tower sees (smart_resize, factor 32)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=FACTOR, min_pixels=MIN_PIXELS,
                        max_pixels=MAX_PIXELS)
    return w, h


def image_processor():
    """The primary tower's processor as the reference builds it (§2.1)."""
    from transformers import Qwen2VLImageProcessor

    from vlxseek_core.families.vlx_seek_1_5.tiny import QWEN35_PREPROCESSOR

    kwargs = {k: v for k, v in QWEN35_PREPROCESSOR.items() if k != "image_processor_type"}
    return Qwen2VLImageProcessor(**kwargs, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


@dataclass
class Prepared:
    """One preprocessed frame (CPU tensors).

    Attributes:
        pixel_values: ``[gh·gw, 1536]`` processor rows; image_grid_thw: long ``[1, 3]``.
        aux_pixel_values: float32 ``[1, 3, H, W]`` RGB in ``[0, 1]`` (original size).
        boxes: float32 ``[N, 4]`` model-order boxes in original pixels; vt_boxes: the same in
            pixels of the Qwen-resized image.
    """

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    aux_pixel_values: torch.Tensor
    boxes: torch.Tensor
    vt_boxes: torch.Tensor


def preprocess(processor, image: np.ndarray, boxes: np.ndarray, order_mode: str,
               patch_size: int = 16) -> Prepared:
    """Both towers' inputs and the boxes in model order, as the reference prepares them."""
    from PIL import Image

    from vlxseek_core.families.vlx_seek_1_5.box_order import prepare_boxes
    from vlxseek_core.families.vlx_seek_1_5.modeling import vt_boxes_from_original

    height, width = image.shape[:2]
    inputs = processor(images=Image.fromarray(image), return_tensors="pt")
    aux = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    order = prepare_boxes(boxes, (width, height), order_mode)
    model_boxes = torch.as_tensor(order.model_boxes, dtype=torch.float32).reshape(-1, 4)
    grid = inputs["image_grid_thw"]
    return Prepared(inputs["pixel_values"], grid, aux, model_boxes,
                    vt_boxes_from_original(model_boxes, (height, width), grid, patch_size))


def detect_prompt_ids(tok, query: str, boxes: np.ndarray, image_size: Tuple[int, int],
                      grid: Sequence[Sequence[int]], order_mode: str = "none") -> List[int]:
    """Expanded ids of the ``detection`` prompt with one ``<objfeat>`` per box (§1.6, §4.1)."""
    from vlxseek_core.families.vlx_seek_1_5.prompts import (expand_placeholders,
                                                            object_token_count,
                                                            prepare_request, tokenize_prompt)

    request = prepare_request("detection", query, boxes, image_size, order_mode,
                              max_boxes=object_token_count(tok))
    ids = tokenize_prompt(request.prompt, tok)
    return expand_placeholders(ids, tok, grid, len(request.order)).input_ids


def random_frame(model, grid_hw: Tuple[int, int], num_regions: int, seed: int):
    """An ``EncodedFrame`` of random rows with the counts a real frame would have
    (``gh·gw/4`` image rows, one region row per box): the decode cost does not depend on them."""
    from vlxseek_core.modeling import EncodedFrame

    grid_h, grid_w = grid_hw
    hidden = model.config.text_config.hidden_size
    dev, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    gen = torch.Generator(device=dev).manual_seed(seed)
    n_image = grid_h * grid_w // 4

    def rows(n: int) -> torch.Tensor:
        return (torch.randn(n, hidden, generator=gen, device=dev) * 0.02).to(dtype)

    return EncodedFrame(rows(n_image), rows(num_regions),
                        torch.tensor([[1, grid_h, grid_w]], device=dev))


def build_prompt(model, tok, frame_size: Tuple[int, int], num_proposals: int, query: str,
                 seed: int):
    """Spliced ``detection`` prompt ``(inputs_embeds, position_ids, num_image_tokens)`` for a
    ``frame_size`` frame with ``num_proposals`` random boxes (bench_decode)."""
    from benchmarks.common import random_boxes

    w_in, h_in = resized_size(*frame_size)
    patch = model.config.vision_config.patch_size
    grid_h, grid_w = h_in // patch, w_in // patch
    frame = random_frame(model, (grid_h, grid_w), num_proposals, seed)
    boxes = random_boxes(num_proposals, *frame_size, seed=seed)
    ids = detect_prompt_ids(tok, query, boxes, frame_size, [[1, grid_h, grid_w]],
                            model.config.mm("mm_bbox_order_mode"))
    embeds, position_ids, _ = model.build_inputs_embeds(ids, frame)
    return embeds, position_ids, frame.image_embeds.shape[0]


def region_processor(tok, num_regions: int):
    """The pipeline's constrained decoding with ``<objK>`` index tokens."""
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor
    from vlxseek_core.families.vlx_seek_1_5.box_order import OBJ_TOKENS
    from vlxseek_core.families.vlx_seek_1_5.prompts import object_token_count

    tokens = [OBJ_TOKENS.token(k) for k in range(object_token_count(tok))]
    return RegionAnswerLogitsProcessor(tok, num_regions, region_tokens=tokens,
                                       first_special_id=FIRST_SPECIAL_ID)


def encoder_pieces(model, prepared: Prepared) -> Dict[str, Callable[[], object]]:
    """The parts of ``VLXSeek15ForCausalLM.encode_frame`` as separate callables.

    Returns:
        ordered ``{stage name: callable}``; each call stores its output in ``state``, also
        returned under the key ``"state"`` (not a stage).
    """
    m = model.model
    hfre = m.object_vp_extractor
    dev = model.lm_head.weight.device
    pv, grid = prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev)
    aux_pv = prepared.aux_pixel_values.to(dev)
    boxes, vt_boxes = prepared.boxes.to(dev), prepared.vt_boxes.to(dev)
    connector = next(m.mm_projector_aux.parameters(), m.embed_tokens.weight)
    state: Dict[str, object] = {}

    def vit():
        tokens, maps = m.vision_tower(pv, grid)
        state["image_embeds"] = m.mm_projector(tokens[0])
        state["vt_map"] = maps[0]

    def radio():
        # vt-only HFREs never read the aux maps; encode_frame then skips the tower too
        state["aux_maps"] = None if hfre.vt_only else m.vision_tower_aux(aux_pv)

    def regions():
        feats = hfre(state["aux_maps"], boxes, state["vt_map"], vt_boxes)
        state["region_embeds"] = m.mm_projector_aux(feats.to(connector.dtype))

    return {"Qwen3.5 vision tower + mm_projector": vit, "C-RADIO (aux tower)": radio,
            "HFRE (SimpleFP, RoIAlign, box embedding) + mm_projector_aux": regions,
            "state": state}


def encode_check(model, prepared: Prepared):
    """``encode_frame`` in one call (to check the split stages against)."""
    dev = model.lm_head.weight.device
    return model.encode_frame(prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev),
                              prepared.aux_pixel_values.to(dev), prepared.boxes.to(dev),
                              prepared.vt_boxes.to(dev))


def parameter_groups(model) -> Dict[str, torch.nn.Module]:
    """Components whose parameter sizes bench_stages prints."""
    m = model.model
    return {"Qwen3.5 ViT": m.vision_tower, "C-RADIO": m.vision_tower_aux,
            "HFRE+connector": torch.nn.ModuleList([m.object_vp_extractor, m.mm_projector_aux]),
            "LLM (incl. embeddings, untied lm_head)": torch.nn.ModuleList(
                [m.language_model, model.lm_head])}


def header_settings(model, prepared: Prepared) -> Dict[str, object]:
    """1.5-specific settings for the bench_stages header."""
    from vlxseek_core.families.vlx_seek_1_5.config import radio_dims

    types = model.config.text_config.layer_types
    return {"llm_layers": f"{len(types)} ({types.count('full_attention')} attention, "
                          f"{types.count('linear_attention')} gated-delta-net)",
            "vit_blocks": model.config.vision_config.depth,
            "aux_blocks": radio_dims(model.config)["depth"],
            "aux_image": "{}x{} (the original WxH; the tower rounds it to multiples of 16)"
                         .format(*prepared.aux_pixel_values.shape[:-3:-1])}
