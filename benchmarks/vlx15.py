"""VLX-Seek 1.5 pieces of the latency benchmarks (bench_stages, bench_decode).

What differs from VLM-FO1 and is built here with the family's own code
(:mod:`vlxseek_core.families.vlx_seek_1_5`): the stand-in tokenizer (exact Qwen2 BPE, the 1.5
special-token ids; the real Qwen3.5 vocabulary is not available offline, so answer token
counts are approximations), the ``detection`` prompt with expanded ``<|image_pad|>`` /
``<objfeat>`` ids (§1.6, §4), the family's own preprocessor
(:mod:`vlxseek_core.families.vlx_seek_1_5.preprocessing`, not a copy of it), and
``encode_frame`` split into its stages (Qwen3.5 vision tower +
``mm_projector``, C-RADIO aux tower, HFRE + ``mm_projector_aux``; §2-3).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

FIRST_SPECIAL_ID = 248044
"""First added-token id of the 1.5 vocabulary (``<|endoftext|>``): label text is below it."""


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The offline 1.5 stand-in tokenizer (built once per process)."""
    from vlxseek_core.families.vlx_seek_1_5.tokenizer import build_vlx_seek_15_tokenizer

    return build_vlx_seek_15_tokenizer()


@functools.lru_cache(maxsize=1)
def image_processor():
    """The primary tower's processor as the family builds it (§2.1), from the tiny checkpoint's
    ``preprocessor_config.json`` settings (the benchmark models have no directory)."""
    from vlxseek_core.families.vlx_seek_1_5.preprocessing import qwen_processor
    from vlxseek_core.families.vlx_seek_1_5.tiny import QWEN35_PREPROCESSOR

    return qwen_processor(QWEN35_PREPROCESSOR)


def resized_size(width: int, height: int) -> Tuple[int, int]:
    """``(width, height)`` of the image the Qwen3.5 tower sees (the family's resize rule)."""
    from vlxseek_core.families.vlx_seek_1_5.preprocessing import resized_size as family_size

    return family_size(image_processor(), width, height)


def preprocessor(order_mode: str):
    # the pipeline's class itself, so the timed stage and its output are what a query runs
    """The family's preprocessor (both towers' inputs, boxes in model order, §2.1, §3.2, §4.4);
    calling it on ``(image, boxes)`` gives a :class:`~vlxseek_core.preprocessing.PreparedImage`
    whose ``aux_boxes``/``vt_boxes`` are in model order."""
    from vlxseek_core.families.vlx_seek_1_5.preprocessing import VLXSeek15Preprocessor

    return VLXSeek15Preprocessor(image_processor(), order_mode)


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


def encoder_pieces(model, prepared) -> Dict[str, Callable[[], object]]:
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
    boxes, vt_boxes = prepared.aux_boxes.to(dev), prepared.vt_boxes.to(dev)
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


def encode_check(model, prepared):
    """``encode_frame`` in one call (to check the split stages against)."""
    dev = model.lm_head.weight.device
    return model.encode_frame(prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev),
                              prepared.aux_pixel_values.to(dev), prepared.aux_boxes.to(dev),
                              prepared.vt_boxes.to(dev))


def parameter_groups(model) -> Dict[str, torch.nn.Module]:
    """Components whose parameter sizes bench_stages prints."""
    m = model.model
    return {"Qwen3.5 ViT": m.vision_tower, "C-RADIO": m.vision_tower_aux,
            "HFRE+connector": torch.nn.ModuleList([m.object_vp_extractor, m.mm_projector_aux]),
            "LLM (incl. embeddings, untied lm_head)": torch.nn.ModuleList(
                [m.language_model, model.lm_head])}


def header_settings(model, prepared) -> Dict[str, object]:
    """1.5-specific settings for the bench_stages header."""
    from vlxseek_core.families.vlx_seek_1_5.config import radio_dims

    types = model.config.text_config.layer_types
    return {"llm_layers": f"{len(types)} ({types.count('full_attention')} attention, "
                          f"{types.count('linear_attention')} gated-delta-net)",
            "vit_blocks": model.config.vision_config.depth,
            "aux_blocks": radio_dims(model.config)["depth"],
            "aux_image": "{}x{} (the original WxH; the tower rounds it to multiples of 16)"
                         .format(*prepared.aux_pixel_values.shape[:-3:-1])}
