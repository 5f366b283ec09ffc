"""Prefill and KV-cached decoding of the VLM-FO1 language model, step by step.

``pipeline.VLXSeek`` decodes with ``model.generate``; the benchmarks instead run the same
forward calls by hand so that prefill and each decode step can be timed separately and the
output can be teacher-forced to a given token sequence (a region answer or a coordinate
answer of known length). :func:`KVDecoder.greedy` decodes without forcing; the smoke test
checks that it reproduces ``model.generate``'s greedy tokens, i.e. that positions and cache are
handled as ``generate`` handles them.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch

from vlxseek_core.modeling import CACHE_KWARG, output_cache


class KVDecoder:
    """Decode from one spliced prompt, reusing its prefilled KV cache.

    Args:
        model: ``VLMFO1ForCausalLM``.
        inputs_embeds: ``[1, L, hidden]`` from ``model.build_inputs_embeds``.
        position_ids: ``[3, 1, L]`` M-RoPE positions from the same call.
    """

    def __init__(self, model, inputs_embeds: torch.Tensor, position_ids: torch.Tensor):
        self.model = model
        self.inputs_embeds = inputs_embeds
        self.position_ids = position_ids
        self._prefilled = None  # (cache, last logits) after prefill()
        self.cache = None
        self.logits: Optional[torch.Tensor] = None

    @property
    def device(self) -> torch.device:
        return self.inputs_embeds.device

    @torch.inference_mode()
    def prefill(self) -> None:
        """Run the prompt through the LLM once (KV cache + logits of the last position)."""
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

    def _step(self, token: int, index: int) -> None:
        """Feed one token at answer position ``index`` (0-based) through the cached LLM."""
        pos = int(self.position_ids.max()) + 1 + index
        position_ids = torch.full((3, 1, 1), pos, dtype=torch.long, device=self.device)
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
