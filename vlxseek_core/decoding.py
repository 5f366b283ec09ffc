"""Constrained decoding for region answers: a transformers ``LogitsProcessor``.

Keeps a region answer well-formed while the model decodes:
``(<ground>label</ground><objects><regionA><regionB>…</objects>)+`` then ``<|im_end|>``,
with only ``<regionK>`` for ``K < num_regions`` inside ``<objects>``, no index twice in one block,
labels of ordinary tokens only, and ``<|im_end|>`` only after a complete block. With
``trailing_text=True`` (counting) ordinary text may follow the blocks ("… there are 3"). Given
the decoding budget, the open block is closed in time so that the answer also ends well-formed
when the budget runs out.

The state is recomputed from the generated ids at every step, so one processor instance can
serve any number of sequences and cached prefixes without carrying state between them.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from transformers import LogitsProcessor

from .tokens import GROUND_CLOSE, GROUND_OPEN, IM_END, OBJECTS_CLOSE, OBJECTS_OPEN, region_token

START, LABEL, AFTER_LABEL, OBJECTS, AFTER_OBJECTS, TEXT, DONE = range(7)


class RegionAnswerLogitsProcessor(LogitsProcessor):
    """Mask logits so that greedy/sampled output is always a parseable region answer.

    Args:
        tokenizer: the checkpoint tokenizer (ids of the tags are read from it).
        num_regions: regions shown to the model; ``<regionK>`` with ``K ≥ num_regions`` is
            never allowed.
        max_label_tokens: a label longer than this is closed with ``</ground>`` (generous:
            referring expressions are labels too, and every cut changes the answer).
        trailing_text: allow free text after the grounded blocks (``count``).
        first_special_id: ids from here on are special/added tokens, never label text
            (Qwen2: 151643).
        prompt_length: leading ids of ``input_ids`` that are prompt, not answer (0 when
            generating from ``inputs_embeds``, where transformers passes only new tokens).
        max_new_tokens: the decoding budget; ``None`` = unbounded (nothing closed early).
    """

    def __init__(self, tokenizer, num_regions: int, max_label_tokens: int = 64,
                 trailing_text: bool = False, first_special_id: int = 151643,
                 prompt_length: int = 0, max_new_tokens: Optional[int] = None):
        ids = tokenizer.convert_tokens_to_ids
        self.ground_open, self.ground_close = ids(GROUND_OPEN), ids(GROUND_CLOSE)
        self.objects_open, self.objects_close = ids(OBJECTS_OPEN), ids(OBJECTS_CLOSE)
        self.im_end = ids(IM_END)
        self.num_regions = min(num_regions, 100)
        self.region_ids: List[int] = [ids(region_token(k)) for k in range(self.num_regions)]
        self.region_index = {tid: k for k, tid in enumerate(self.region_ids)}
        self.max_label_tokens = max_label_tokens
        self.trailing_text = trailing_text
        self.first_special_id = first_special_id
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens

    def _state(self, generated: List[int]):
        state, label_len, used = START, 0, set()
        for tok in generated:
            if state in (START, AFTER_OBJECTS) and tok == self.ground_open:
                state, label_len = LABEL, 0
            elif state in (AFTER_OBJECTS, TEXT) and tok == self.im_end:
                state = DONE
            elif state in (AFTER_OBJECTS, TEXT):
                state = TEXT
            elif state == LABEL:
                if tok == self.ground_close:
                    state = AFTER_LABEL
                else:
                    label_len += 1
            elif state == AFTER_LABEL and tok == self.objects_open:
                state, used = OBJECTS, set()
            elif state == OBJECTS:
                if tok == self.objects_close:
                    state = AFTER_OBJECTS
                else:
                    used.add(self.region_index.get(tok, -1))
        return state, label_len, used

    def allowed_ids(self, generated: List[int], vocab_size: int) -> torch.Tensor:
        """Boolean ``[vocab_size]`` mask of the tokens allowed after ``generated``."""
        state, label_len, used = self._state(generated)
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        closing = self._closing_token(state, label_len, used, len(generated))
        if closing is not None:  # just enough budget left to end the answer well-formed
            allowed[closing] = True
            return allowed
        text = slice(0, min(self.first_special_id, vocab_size))
        if state == START:
            allowed[self.ground_open] = True
        elif state == LABEL:
            if label_len < self.max_label_tokens:
                allowed[text] = True
            if label_len > 0:
                allowed[self.ground_close] = True
        elif state == AFTER_LABEL:
            allowed[self.objects_open] = True
        elif state == OBJECTS:
            free = [tid for k, tid in enumerate(self.region_ids) if k not in used]
            allowed[free] = True
            if used or not free:
                allowed[self.objects_close] = True
        elif state == AFTER_OBJECTS:
            allowed[[self.ground_open, self.im_end]] = True
            if self.trailing_text:
                allowed[text] = True
        elif state == TEXT:
            allowed[text] = True
            allowed[self.im_end] = True
        else:  # DONE: only the end token keeps the sequence padded sensibly
            allowed[self.im_end] = True
        return allowed

    def _closing_token(self, state: int, label_len: int, used: set,
                       num_generated: int) -> Optional[int]:
        """The token that must come now so the answer can still end within the budget.

        Shortest endings: in a label ``</ground><objects><regionK></objects><|im_end|>`` (5),
        in a non-empty ``<objects>`` ``</objects><|im_end|>`` (2), after a block
        ``<|im_end|>`` (1).
        """
        if self.max_new_tokens is None:
            return None
        left = self.max_new_tokens - num_generated  # tokens still to generate, this one included
        if state == LABEL and label_len > 0 and left <= 5:
            return self.ground_close
        if state == OBJECTS and used and left <= 2:
            return self.objects_close
        if state in (AFTER_OBJECTS, TEXT) and left <= 1:
            return self.im_end
        return None

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        """``input_ids`` ``[B, generated_len]`` (generated tokens only when decoding from
        embeddings), ``scores`` ``[B, vocab]`` → scores with disallowed tokens at ``-inf``."""
        out = scores.clone()
        for row in range(scores.shape[0]):
            answer_ids = input_ids[row, self.prompt_length:].tolist()
            mask = self.allowed_ids(answer_ids, scores.shape[1]).to(scores.device)
            out[row] = out[row].masked_fill(~mask, float("-inf"))
        return out
