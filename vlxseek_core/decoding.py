"""Constrained decoding for region answers: a transformers ``LogitsProcessor``.

Keeps a region answer well-formed while the model decodes, without deciding it::

    answer  := <|im_end|>                                   (empty answer: nothing found)
             | block+ [text]  <|im_end|>                    (text only with trailing_text)
    block   := <ground> label </ground> <objects> inner </objects>
    inner   := <regionA><regionB>…                          (found: ≥ 1 region, none twice)
             | None                                         (rejection: the phrase is absent)

with only ``<regionK>`` for ``K < num_regions``, labels of ordinary (non-special) tokens, and the
rejection text (:data:`~vlxseek_core.answer_format.REJECTION_TEXT`) as the tokenizer writes it
(one token for Qwen2; a longer tokenization is forced to its end once begun). Wherever the model
may end or reject, both stay allowed: the model, not the constraint, says whether a target is
there. With ``trailing_text=True`` (counting) ordinary text may follow the blocks ("… 3").

Given the decoding budget, every allowed token leaves enough room to finish the answer
well-formed (the open label is closed, an empty ``<objects>`` is closed with ``None</objects>``
or one region), so the answer also ends well-formed when the budget runs out.

The state is recomputed from the generated ids at every step, so one processor instance can
serve any number of sequences and cached prefixes without carrying state between them.

The index tokens are a parameter: ``<regionK>`` (VLM-FO1, the default) or any other spelling such
as VLX-Seek 1.5's ``<objK>`` (spec vlx-seek-1.5 §4.5); their ids are read from the tokenizer.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from transformers import LogitsProcessor

from .answer_format import REJECTION_TEXT
from .errors import CheckpointError
from .tokens import (GROUND_CLOSE, GROUND_OPEN, IM_END, OBJECTS_CLOSE, OBJECTS_OPEN,
                     REGION_TOKENS)

START, LABEL, AFTER_LABEL, OBJECTS, REJECTION, AFTER_OBJECTS, TEXT, DONE = range(8)
"""Decoder states: ``REJECTION`` = inside ``<objects>`` after the first rejection token."""

_TokenSet = Union[int, List[int], slice]


def _token_id(tokenizer, token: str) -> int:
    """The id of an added token; a tokenizer that does not know it maps it to ``None`` or to
    the unknown token, and a region that no token can name would be silently unreachable."""
    idx = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if idx is None or (unk is not None and idx == unk
                       and token != getattr(tokenizer, "unk_token", None)):
        raise CheckpointError(f"the tokenizer has no token {token!r}")
    return int(idx)


class RegionAnswerLogitsProcessor(LogitsProcessor):
    """Mask logits so that greedy/sampled output is always a parseable region answer.

    Allowed next tokens, per state (before the budget filter):

    * start: ``<ground>``, ``<|im_end|>`` (an empty answer);
    * in a label: ordinary tokens (while shorter than ``max_label_tokens``), ``</ground>``
      (once the label is non-empty);
    * after ``</ground>``: ``<objects>``;
    * right after ``<objects>``: every ``<regionK>`` (``K < num_regions``) and the first token of
      the rejection text ``None``;
    * after a region: the unused regions and ``</objects>``;
    * inside the rejection text: its next token; after it: ``</objects>``;
    * after ``</objects>``: ``<ground>``, ``<|im_end|>`` and, with ``trailing_text``, ordinary
      tokens; in the trailing text: ordinary tokens and ``<|im_end|>``;
    * after ``<|im_end|>``: ``<|im_end|>`` (padding).

    With ``max_new_tokens`` only the tokens after which the answer can still be completed within
    the budget stay allowed (e.g. ``</ground>`` when 5 tokens are left in a label).

    Args:
        tokenizer: the checkpoint tokenizer: ``convert_tokens_to_ids`` reads the tag ids and
            ``tokenizer("None", add_special_tokens=False)["input_ids"]`` the rejection text.
        num_regions: regions shown to the model; ``<regionK>`` with ``K ≥ num_regions`` is
            never allowed (at most ``len(region_tokens)`` regions exist, 100 by default).
        max_label_tokens: a label longer than this is closed with ``</ground>`` (generous:
            referring expressions are labels too, and every cut changes the answer).
        trailing_text: allow free text after the grounded blocks (``count``).
        first_special_id: ids from here on are special/added tokens, never label text
            (Qwen2: 151643).
        prompt_length: leading ids of ``input_ids`` that are prompt, not answer (0 when
            generating from ``inputs_embeds``, where transformers passes only new tokens).
        max_new_tokens: the decoding budget; ``None`` = unbounded (nothing closed early).
        region_tokens: the index token strings in index order, ``region_tokens[K]`` refers to
            region ``K``; ``None`` = VLM-FO1's ``<region0>``…``<region99>``. VLX-Seek 1.5 passes
            ``<obj0>``, ``<obj1>``, … (with ``first_special_id`` of its tokenizer).

    Raises:
        ValueError: the rejection text tokenizes into special tokens (a broken tokenizer).
        CheckpointError: the tokenizer lacks one of the first ``num_regions`` region tokens.
    """

    def __init__(self, tokenizer, num_regions: int, max_label_tokens: int = 64,
                 trailing_text: bool = False, first_special_id: int = 151643,
                 prompt_length: int = 0, max_new_tokens: Optional[int] = None,
                 region_tokens: Optional[Sequence[str]] = None):
        ids = tokenizer.convert_tokens_to_ids
        self.ground_open, self.ground_close = ids(GROUND_OPEN), ids(GROUND_CLOSE)
        self.objects_open, self.objects_close = ids(OBJECTS_OPEN), ids(OBJECTS_CLOSE)
        self.im_end = ids(IM_END)
        region_tokens = REGION_TOKENS if region_tokens is None else tuple(region_tokens)
        self.num_regions = max(0, min(num_regions, len(region_tokens)))
        self.region_ids: List[int] = [
            _token_id(tokenizer, region_tokens[k]) for k in range(self.num_regions)]
        self.region_index = {tid: k for k, tid in enumerate(self.region_ids)}
        self.rejection_ids: List[int] = [
            int(i) for i in tokenizer(REJECTION_TEXT, add_special_tokens=False)["input_ids"]]
        if any(i >= first_special_id for i in self.rejection_ids):
            raise ValueError(f"the rejection text {REJECTION_TEXT!r} tokenizes into special "
                             f"tokens {self.rejection_ids}")
        self.max_label_tokens = max_label_tokens
        self.trailing_text = trailing_text
        self.first_special_id = first_special_id
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens

    def _state(self, generated: List[int]) -> Tuple[int, int, set, int]:
        """``(state, label length, regions used in the open block, rejection tokens written)``.

        Tokens the grammar does not expect (possible only without this processor) are skipped.
        """
        state, label_len, used, rejected = START, 0, set(), 0
        rejection = self.rejection_ids
        for tok in generated:
            if state in (START, AFTER_OBJECTS) and tok == self.ground_open:
                state, label_len = LABEL, 0
            elif state in (START, AFTER_OBJECTS, TEXT) and tok == self.im_end:
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
                elif not used and rejection and tok == rejection[0]:
                    state, rejected = REJECTION, 1
                else:
                    used.add(self.region_index.get(tok, -1))
            elif state == REJECTION:
                if tok == self.objects_close:
                    state = AFTER_OBJECTS
                elif rejected < len(rejection) and tok == rejection[rejected]:
                    rejected += 1
        return state, label_len, used, rejected

    def _need(self, state: int, label_len: int = 0, used: Optional[set] = None,
              rejected: int = 0) -> float:
        """Fewest tokens that complete the answer from a state, ``<|im_end|>`` included
        (``inf`` when it cannot be completed)."""
        if state == DONE:
            return 0
        if state in (START, AFTER_OBJECTS, TEXT):
            return 1
        if state == REJECTION:
            return len(self.rejection_ids) - rejected + 2
        if state == OBJECTS:
            if used:
                return 2
            options = [3] if self.num_regions else []
            if self.rejection_ids:
                options.append(len(self.rejection_ids) + 2)
            return min(options) if options else 2  # no way to fill it: closed empty
        after_label = 1 + self._need(OBJECTS)
        if state == AFTER_LABEL:
            return after_label
        # LABEL: </ground> (once non-empty) after at least one label token
        if label_len == 0 and self.max_label_tokens < 1:
            return math.inf
        return 1 + after_label + (label_len == 0)

    def _moves(self, state: int, label_len: int, used: set,
               rejected: int) -> List[Tuple[_TokenSet, float]]:
        """The tokens the grammar allows next, each with :meth:`_need` of the state after it."""
        text = slice(0, self.first_special_id)
        label_need = self._need(LABEL, 0)
        if state == START:
            return [(self.ground_open, label_need), (self.im_end, 0)]
        if state == LABEL:
            moves = []
            if label_len < self.max_label_tokens:
                moves.append((text, self._need(LABEL, label_len + 1)))
            if label_len > 0:
                moves.append((self.ground_close, self._need(AFTER_LABEL)))
            return moves
        if state == AFTER_LABEL:
            return [(self.objects_open, self._need(OBJECTS))]
        if state == OBJECTS:
            free = [tid for k, tid in enumerate(self.region_ids) if k not in used]
            moves = [(free, 2)] if free else []
            if not used and self.rejection_ids:
                moves.append((self.rejection_ids[0], self._need(REJECTION, rejected=1)))
            if used or not moves:
                moves.append((self.objects_close, 1))
            return moves
        if state == REJECTION:
            if rejected < len(self.rejection_ids):
                after = self._need(REJECTION, rejected=rejected + 1)
                return [(self.rejection_ids[rejected], after)]
            return [(self.objects_close, 1)]
        if state == AFTER_OBJECTS:
            moves = [(self.ground_open, label_need), (self.im_end, 0)]
            if self.trailing_text:
                moves.append((text, 1))
            return moves
        if state == TEXT:
            return [(text, 1), (self.im_end, 0)]
        return [(self.im_end, 0)]  # DONE: only the end token keeps the sequence padded sensibly

    def allowed_ids(self, generated: List[int], vocab_size: int) -> torch.Tensor:
        """The tokens allowed after ``generated``.

        Args:
            generated: the answer's ids so far (no prompt).
            vocab_size: length of the mask (the logits' last dimension).

        Returns:
            Boolean ``[vocab_size]`` mask; never all ``False`` (when the budget is already too
            small to finish, the moves that finish soonest stay allowed).
        """
        state, label_len, used, rejected = self._state(generated)
        moves = [m for m in self._moves(state, label_len, used, rejected) if m[1] < math.inf]
        if not moves:  # only after tokens this processor would not have allowed
            moves = [(self.im_end, 0)]
        if self.max_new_tokens is not None:
            left = self.max_new_tokens - len(generated)  # tokens still to generate, this one too
            fitting = [m for m in moves if 1 + m[1] <= left]
            if not fitting:  # cannot happen from a constrained start; finish as soon as possible
                soonest = min(need for _, need in moves)
                fitting = [m for m in moves if m[1] == soonest]
            moves = fitting
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        for tokens, _ in moves:
            if isinstance(tokens, slice):
                allowed[0:min(tokens.stop, vocab_size)] = True
            else:
                ids = [t for t in ([tokens] if isinstance(tokens, int) else tokens)
                       if 0 <= t < vocab_size]
                allowed[ids] = True
        return allowed

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
