"""Start ``probe_lookup``'s sandbox LLM from a vlxseek checkpoint's text model (issue 9).

Why: the sandbox (``benchmarks/probe_lookup.py``) and ``vlxseek train`` differ in many ways at
once (the loss's vocabulary and its sampled off-shortlist column, the per-sample loss mean, the
optimizer restarting at every phase, finite record files, the initialisation). Starting the
sandbox from a checkpoint that ``vlxseek train`` wrote splits them in two: if the sandbox's own
training loop, from that checkpoint, does what ``vlxseek train`` did from it, the difference
lies in the weights the earlier phases left, not in the loop (docs/scene-model-notes.md,
"The 2–6 phase stalls in the weights it starts from").

The sandbox speaks its own vocabulary (``lookup_tasks.VOCAB`` tokens). Each sandbox token that a
text-region ``detect_all`` prompt of ``make-text-regions`` uses gets the checkpoint's embedding
row of the real token it stands for: ``<regionK>``, the 30 default words (sandbox word ``i`` is
:data:`~vlxseek_core.training.text_regions.DEFAULT_WORDS` ``[i]``), the answer markup, the
prompt's fixed tokens before the list (the filler prefix) and after it (the ``detect_all``
token, then the task text). Other sandbox tokens keep fresh random rows (std 0.02). The LLM's
other weights are copied as they are: the FO1 text model computes what a stock
``Qwen2ForCausalLM`` of the same sizes computes on text (M-RoPE with equal position components
is 1-D RoPE).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from benchmarks import lookup_tasks as sandbox


def layout_and_ids(tokenizer) -> Tuple[int, int, Dict[int, int]]:
    """The FO1 ``detect_all`` text-region prompt layout in sandbox terms.

    Returns:
        ``(prefix, task_text, real_id)``: the number of fixed tokens before the region list
        (``--prefix`` with ``--fixed-prefix``), of task-text tokens after the ``detect_all``
        token (``--task-text``), and sandbox id → real vocabulary id for every sandbox token
        such a prompt or its answer uses.

    Raises:
        ValueError: the prompt layout does not fit the sandbox's token ranges.
    """
    from vlxseek_core.prompts import PromptTokenizer, task_parts
    from vlxseek_core.tokens import region_token
    from vlxseek_core.training.text_regions import DEFAULT_WORDS, text_region_prompt_ids

    if len(DEFAULT_WORDS) != len(sandbox.WORDS):
        raise ValueError(f"{len(DEFAULT_WORDS)} default words for {len(sandbox.WORDS)} "
                         "sandbox words")
    prompt_tok = PromptTokenizer(tokenizer)
    word = DEFAULT_WORDS[0]
    ids = text_region_prompt_ids(prompt_tok, task_parts("detect_all", ""), [word])
    first = ids.index(prompt_tok.token_id(region_token(0)))
    prefix, suffix = ids[:first], ids[first + 2:]
    if (len(prefix) > len(sandbox.FILLER) or not 1 <= len(suffix) <= len(sandbox.TASK_TEXT) + 1
            or ids[first + 1] != prompt_tok.token_id(word)):
        raise ValueError("the detect_all text-region prompt does not fit the sandbox layout")
    real = {k: prompt_tok.token_id(region_token(k)) for k in sandbox.REGIONS}
    for i, w in enumerate(DEFAULT_WORDS):
        (real[sandbox.WORDS[i]],) = prompt_tok.text_ids(w)
    for s, token in ((sandbox.GROUND, "<ground>"), (sandbox.GROUND_END, "</ground>"),
                     (sandbox.OBJECTS, "<objects>"), (sandbox.OBJECTS_END, "</objects>"),
                     (sandbox.END, "<|im_end|>")):
        real[s] = prompt_tok.token_id(token)
    real.update(zip(sandbox.FILLER, prefix))
    real[sandbox.DETECT_ALL] = suffix[0]
    real.update(zip(sandbox.TASK_TEXT, suffix[1:]))
    return len(prefix), len(suffix) - 1, real


def sandbox_state(directory: str) -> Tuple[dict, dict]:
    """The sandbox ``Qwen2ForCausalLM`` state dict of checkpoint ``directory``'s text model.

    Returns:
        ``(state_dict, info)``: float32 tensors with the sandbox's key names (the VOCAB-row
        embedding, tied ``lm_head.weight``); ``info`` holds the sizes (``hidden``, ``layers``,
        ``heads``, ``kv_heads``, ``intermediate``, ``rope_theta``) and the layout (``prefix``,
        ``task_text``) the sandbox must use.

    Raises:
        CheckpointError: an unreadable checkpoint.
        ValueError: a text model the sandbox cannot hold (untied embeddings).
    """
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.trainer import lr_group

    vlm, _ = load_model(directory)
    config = vlm.config.get_text_config()
    if vlm.lm_head.weight.data_ptr() != vlm.model.embed_tokens.weight.data_ptr():
        raise ValueError(f"{directory}: the sandbox ties lm_head to the embedding")
    prefix, task_text, real = layout_and_ids(load_tokenizer(directory))
    weight = vlm.model.embed_tokens.weight.detach().float()
    embedding = torch.randn(sandbox.VOCAB, weight.shape[1],
                            generator=torch.Generator().manual_seed(0)) * 0.02
    for s, r in real.items():
        embedding[s] = weight[r]
    state = {f"model.{k}": v.detach().float().clone()
             for k, v in vlm.model.state_dict().items()
             if lr_group(k) == "llm" and k != "embed_tokens.weight"}
    state["model.embed_tokens.weight"] = embedding
    state["lm_head.weight"] = embedding
    info = dict(hidden=config.hidden_size, layers=config.num_hidden_layers,
                heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                intermediate=config.intermediate_size,
                rope_theta=config.rope_parameters["rope_theta"], prefix=prefix,
                task_text=task_text)
    return state, info
