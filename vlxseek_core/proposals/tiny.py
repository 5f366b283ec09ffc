"""Offline writer of a tiny, randomly initialised OmDet-Turbo checkpoint.

Used by tests and demos to run the real proposal code path (``from_pretrained(directory)``,
processor, model forward, post-processing) without any download. The boxes it produces are
meaningless. Everything is built locally:

* ``config.json`` — ``OmDetTurboConfig`` with a transformers Swin backbone
  (``use_timm_backbone=False``: no timm, no pretrained backbone weights), a 1-layer CLIP text
  encoder (hidden 16, 77 positions), 1 encoder + 1 decoder layer, hidden size 8, few queries;
  marked ``"vlxseek_random_weights": true``.
* ``model.safetensors`` — random weights (seeded, so the same files every time).
* ``processor_config.json`` — ``OmDetTurboProcessor`` with a ``DetrImageProcessor`` (resize to
  ``image_size`` x ``image_size``, ImageNet normalisation, no padding).
* ``tokenizer.json`` / ``tokenizer_config.json`` — a ``CLIPTokenizer`` whose byte-level BPE
  vocabulary is the 256 byte symbols (with and without ``</w>``), one merge chain per word of
  :data:`GENERIC_VOCABULARY` plus ``"detect"`` (so each of those words is a single token),
  then ``<|startoftext|>`` and ``<|endoftext|>`` as the two highest ids (OmDet-Turbo pools the
  class embedding at the argmax id, i.e. the end-of-text token, as CLIP does). Any other text
  still tokenises (into byte symbols).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

from .sources import GENERIC_VOCABULARY

__all__ = ["write_tiny_omdet_turbo", "RANDOM_WEIGHTS_KEY"]

#: config.json key marking checkpoints whose weights are random (tests/demos only).
RANDOM_WEIGHTS_KEY = "vlxseek_random_weights"


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte → one printable unicode character."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _apply_bpe(symbols: List[str], ranks: Dict[Tuple[str, str], int]) -> List[str]:
    """Standard BPE: repeatedly merge the adjacent pair with the lowest rank."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def _build_clip_bpe(words: Iterable[str]) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """Minimal CLIP BPE vocab + merges in which every word of ``words`` is one token.

    Each word is first segmented with the merges added so far; merges joining the resulting
    pieces left to right are then appended (lowest priority), so earlier words keep their
    single-token segmentation and the new word becomes one token too.
    """
    b2u = _bytes_to_unicode()
    vocab: Dict[str, int] = {}
    for sym in b2u.values():
        vocab.setdefault(sym, len(vocab))
    for sym in b2u.values():
        vocab.setdefault(sym + "</w>", len(vocab))
    merges: List[Tuple[str, str]] = []
    ranks: Dict[Tuple[str, str], int] = {}
    for word in words:
        syms = [b2u[b] for b in word.lower().encode("utf-8")]
        syms[-1] += "</w>"
        pieces = _apply_bpe(syms, ranks)
        cur = pieces[0]
        for nxt in pieces[1:]:
            if (cur, nxt) not in ranks:
                ranks[(cur, nxt)] = len(merges)
                merges.append((cur, nxt))
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_tiny_omdet_turbo(directory: Union[str, "os.PathLike[str]"], *, image_size: int = 224,
                           num_queries: int = 30, seed: int = 0) -> Path:
    """Write a tiny random OmDet-Turbo checkpoint + processor into ``directory``.

    Runs offline in about a second; the files total well under 1 MB. Loading it with
    ``OmDetTurboProposals(directory)`` (or ``AutoProcessor`` /
    ``AutoModelForZeroShotObjectDetection.from_pretrained(directory)``) exercises the real code.

    Args:
        directory: created if missing; existing checkpoint files in it are overwritten.
        image_size: the processor resizes images to ``image_size`` x ``image_size``.
        num_queries: decoder queries (= candidate boxes per class before filtering).
        seed: torch seed for the random weights (the global RNG state is left untouched).

    Returns:
        The directory as a :class:`~pathlib.Path`.
    """
    import torch
    from transformers import (CLIPTokenizer, DetrImageProcessor, OmDetTurboConfig,
                              OmDetTurboForObjectDetection, OmDetTurboProcessor)

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    vocab, merges = _build_clip_bpe(tuple(GENERIC_VOCABULARY) + ("detect",))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    side = int(image_size)
    image_processor = DetrImageProcessor(do_resize=True, size={"height": side, "width": side},
                                         do_pad=False)
    OmDetTurboProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)

    hidden = 8
    text_config = {
        "model_type": "clip_text_model", "vocab_size": len(vocab), "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 77, "projection_dim": 16,
        "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    backbone_config = {
        "model_type": "swin", "embed_dim": hidden, "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1], "window_size": 7, "image_size": int(image_size),
        "out_indices": [2, 3, 4],
    }
    config = OmDetTurboConfig(
        text_config=text_config, backbone_config=backbone_config, use_timm_backbone=False,
        apply_layernorm_after_vision_backbone=False, image_size=int(image_size),
        encoder_in_channels=[2 * hidden, 4 * hidden, 8 * hidden], encoder_projection_indices=[2],
        encoder_layers=1, encoder_attention_heads=2, encoder_dim_feedforward=16,
        encoder_hidden_dim=hidden, vision_features_channels=[hidden, hidden, hidden],
        decoder_num_layers=1, decoder_num_heads=2, decoder_num_points=2, decoder_hidden_dim=hidden,
        decoder_dim_feedforward=16, num_feature_levels=3, num_queries=int(num_queries),
        task_encoder_hidden_dim=16, class_embed_dim=16, text_projection_in_dim=16,
        text_projection_out_dim=16,
        init_std=0.2,  # wider random init → spread-out scores (0.02 makes every score ~0.999)
    )
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = OmDetTurboForObjectDetection(config)
        # the text projection is zero-initialised; make class embeddings non-trivial.
        torch.nn.init.normal_(model.language_backbone.text_projection, std=0.5)
    model.eval()
    model.save_pretrained(out)

    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if not cfg.get(RANDOM_WEIGHTS_KEY):  # keep the marker even if a config version drops it
        cfg[RANDOM_WEIGHTS_KEY] = True
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out
