"""Prefill and cached decoding of the language model (VLM-FO1 or VLX-Seek 1.5), step by step.

``pipeline.VLXSeek`` decodes with ``model.generate``; the benchmarks instead run the same
forward calls by hand so that prefill and each decode step can be timed separately and the
output can be teacher-forced to a given token sequence (a region answer or a coordinate
answer of known length). :func:`KVDecoder.greedy` decodes without forcing; the smoke tests
check that it reproduces ``model.generate``'s greedy tokens for both families, i.e. that
positions and cache are handled as ``generate`` handles them.

The cache is whatever the model's forward returns under
:data:`~vlxseek_core.modeling.CACHE_KWARG`: VLM-FO1's KV cache, or VLX-Seek 1.5's hybrid
Qwen3.5 cache (gated-delta-net convolution + recurrent state for the linear-attention layers,
KV for the attention layers); both are copied with ``copy.deepcopy`` by :meth:`KVDecoder.reset`.
Positions are family-specific (:func:`position_scheme`).
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch

from vlxseek_core.modeling import CACHE_KWARG, output_cache


SEQUENTIAL, MROPE = "sequential", "mrope"


def position_scheme(model) -> str:
    """How a family numbers positions after the prompt.

    * VLM-FO1 (Qwen2.5-VL M-RoPE, ``[3, 1, L]``): image tokens get 2-D positions, so the
      prompt's largest position is below ``L − 1``; ``generate`` continues every row at
      ``max + 1, max + 2, …`` (the rope delta).
    * VLX-Seek 1.5 (vlx-seek-1.5.md §2.6, ``[4, 1, L]``): every token, image tokens included,
      has the 1-D position ``0 … L−1`` on all four rows; ``generate`` continues at
      ``L, L + 1, …``.
    """
    return SEQUENTIAL if getattr(model.config, "model_type", "") == "vlx_seek_1_5" else MROPE


class KVDecoder:
    """Decode from one spliced prompt, reusing its prefilled cache.

    Args:
        model: ``VLMFO1ForCausalLM`` or ``VLXSeek15ForCausalLM``.
        inputs_embeds: ``[1, L, hidden]`` from ``model.build_inputs_embeds``.
        position_ids: from the same call: ``[3, 1, L]`` M-RoPE positions (VLM-FO1) or
            ``[4, 1, L]`` sequential positions (VLX-Seek 1.5).

    Raises:
        ValueError: VLX-Seek 1.5 positions that are not ``0 … L−1`` on every row (the decode
            steps would not continue the prompt as ``generate`` does).
    """

    def __init__(self, model, inputs_embeds: torch.Tensor, position_ids: torch.Tensor):
        self.model = model
        self.inputs_embeds = inputs_embeds
        self.position_ids = position_ids
        self.scheme = position_scheme(model)
        length = inputs_embeds.shape[1]
        if self.scheme == SEQUENTIAL:
            expected = torch.arange(length, device=position_ids.device)
            if position_ids.shape[-1] != length or not bool(
                    (position_ids.reshape(-1, length) == expected).all()):
                raise ValueError("VLX-Seek 1.5 prompt positions must be 0 … L−1 on every row "
                                 "(spec §2.6)")
            self._next = length
        else:
            self._next = int(position_ids.max()) + 1
        self._prefilled = None  # (cache, last logits) after prefill()
        self.cache = None
        self.logits: Optional[torch.Tensor] = None

    @property
    def device(self) -> torch.device:
        return self.inputs_embeds.device

    @torch.inference_mode()
    def prefill(self) -> None:
        """Run the prompt through the LLM once (cache + logits of the last position)."""
        out = self.model(inputs_embeds=self.inputs_embeds, position_ids=self.position_ids,
                         use_cache=True, logits_to_keep=1)
        self._prefilled = (output_cache(out), out.logits)
        self.reset()

    def reset(self) -> None:
        """Back to the state right after :meth:`prefill` (untimed work: copies the cache)."""
        if self._prefilled is None:
            raise RuntimeError("call prefill() first")
        self.cache = copy.deepcopy(self._prefilled[0])
        self.logits = self._prefilled[1]

    def step_position_ids(self, index: int) -> torch.Tensor:
        """Positions of answer token ``index`` (0-based): the same value on every row of the
        family's layout (``[3, 1, 1]`` or ``[4, 1, 1]``), see :func:`position_scheme`."""
        rows = self.position_ids.shape[0]
        return torch.full((rows, 1, 1), self._next + index, dtype=torch.long,
                          device=self.device)

    def _step(self, token: int, index: int) -> None:
        """Feed one token at answer position ``index`` (0-based) through the cached LLM."""
        position_ids = self.step_position_ids(index)
        ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, position_ids=position_ids,
                         **{CACHE_KWARG: self.cache}, use_cache=True, logits_to_keep=1)
        self.cache, self.logits = output_cache(out), out.logits

    @torch.inference_mode()
    def forced(self, target: Sequence[int], processor=None) -> List[int]:
        """Produce exactly ``len(target)`` tokens, emitting ``target`` (teacher forcing).

        Every step does what greedy generation does: take the last logits (fp32), apply
        ``processor`` (e.g. the region-answer constraint), pick the argmax (a host sync, as
        ``generate``'s stopping check is), then feed the *target* token back. The last token
        is emitted but not fed back, as in ``generate``. Call :meth:`reset` between runs.

        Returns:
            the model's own argmax at each step (random weights: meaningless, but computed).

        Raises:
            ValueError: ``processor`` forbids a target token (the answer would be impossible
                under constrained decoding).
        """
        picked: List[int] = []
        history = torch.empty((1, 0), dtype=torch.long, device=self.device)
        for i, token in enumerate(target):
            scores = self.logits[:, -1, :].float()
            if processor is not None:
                scores = processor(history, scores)
                if not torch.isfinite(scores[0, token]):
                    raise ValueError(f"constrained decoding forbids target token {token} at "
                                     f"step {i}")
            picked.append(int(scores.argmax(-1)))
            history = torch.cat([history, history.new_tensor([[token]])], dim=1)
            if i + 1 < len(target):
                self._step(int(token), i)
        return picked

    @torch.inference_mode()
    def greedy(self, steps: int) -> List[int]:
        """Plain greedy decoding of ``steps`` tokens (no forcing, no stopping)."""
        out: List[int] = []
        for i in range(steps):
            out.append(int(self.logits[:, -1, :].float().argmax(-1)))
            if i + 1 < steps:
                self._step(out[-1], i)
        return out
