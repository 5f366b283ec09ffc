"""Type and range rules of every ``config.json`` key the checkpoint loader reads.

:func:`check_config_dict` runs on the raw JSON before transformers sees it, so a value of the
wrong type or range (``mm_roi_output_size: 0``, ``"hidden_size": "64"``, ``"false"`` for a
boolean, a token id outside the vocabulary, an unknown projector) is refused at load time with
a message that names the key, instead of loading and failing on every query, or failing inside
transformers or torch with an unrelated exception.

Rules come from tables: :data:`TOP_RULES` (top-level ``mm_*``/aux/vlxseek keys and token ids),
:data:`TEXT_RULES` (the LLM's keys, at top level as the reference writes them or under
``text_config`` as transformers writes them: both places are checked), :data:`VISION_RULES`
(``vision_config``), :data:`AUX_RULES` (``vlxseek_aux_vision_config``), :data:`ROPE_RULES`
(``rope_scaling``/``rope_parameters``) and :data:`RELATIONS` (rules between keys). Absent keys
are not checked here (transformers' or the reference's default applies). Keys the loader does
not read are ignored.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Check = Callable[[Any], Optional[str]]
"""A rule: returns what is wrong with a value, or ``None`` when it is fine."""

_BIG = 1 << 24


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int, hi: int) -> Check:
    def check(v):
        if not _is_int(v) or not lo <= v <= hi:
            return f"must be an integer in [{lo}, {hi}]"
        return None
    return check


def _number(lo: float, hi: float = math.inf, lo_open: bool = False) -> Check:
    def check(v):
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (v > lo if lo_open else v >= lo) and v <= hi)
        if not ok:
            left = "(" if lo_open else "["
            return f"must be a finite number in {left}{lo}, {hi}]"
        return None
    return check


def _bool(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "must be true or false (a JSON boolean)"


def _str(v: Any) -> Optional[str]:
    return None if isinstance(v, str) else "must be a string"


def _choice(*values: Any) -> Check:
    def check(v):
        if not any(type(v) is type(c) and v == c for c in values):
            return f"must be one of {', '.join(map(repr, values))}"
        return None
    return check


def _optional(rule: Check) -> Check:
    return lambda v: None if v is None else rule(v)


def _int_list(lo: int, hi: int, length: Optional[int] = None) -> Check:
    def check(v):
        size = f"{length} " if length else "a non-empty list of "
        if (not isinstance(v, list) or not v or (length and len(v) != length)
                or not all(_is_int(x) and lo <= x <= hi for x in v)):
            return f"must be {size}integers in [{lo}, {hi}]" + (" (a list)" if length else "")
        return None
    return check


def _projector(v: Any) -> Optional[str]:
    if isinstance(v, str) and (v in ("identity", "linear") or re.fullmatch(r"mlp[1-8]x_gelu", v)):
        return None
    return "must be 'identity', 'linear' or 'mlpNx_gelu' (N in 1..8)"


def _activation(v: Any) -> Optional[str]:
    from transformers.activations import ACT2FN

    return None if isinstance(v, str) and v in ACT2FN else "must name a transformers activation"


def _token_ids(v: Any) -> Optional[str]:
    ids = v if isinstance(v, list) else [v]
    if v is None or (ids and all(_is_int(i) and i >= 0 for i in ids)):
        return None
    return "must be null, a non-negative integer or a list of them"


def _layer_types(v: Any) -> Optional[str]:
    kinds = ("full_attention", "sliding_attention")
    if isinstance(v, list) and all(isinstance(k, str) and k in kinds for k in v):
        return None
    return f"must be a list of {' / '.join(kinds)}"


DEFAULT_MROPE_SECTION = [16, 24, 24]
"""What Qwen2.5-VL's rotary embedding uses when ``mrope_section`` is absent."""
TOKEN_ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id",
                 "vision_end_token_id", "bos_token_id", "eos_token_id", "pad_token_id")

TOP_RULES: Dict[str, Check] = {
    "model_type": _str,
    "mm_vision_tower": _optional(_str),
    "mm_vision_tower_aux": _optional(_str),
    "mm_hidden_size": _optional(_int(1, 65536)),
    "mm_region_hidden_size": _optional(_int(8, 1 << 20)),
    "mm_projector_type": _projector,
    "mm_projector_aux_type": _projector,
    "mm_use_vision_tower_region_feature": _bool,
    "mm_use_simpleFPN_for_vt": _bool,
    "mm_region_feature_combination": _choice("concat"),
    "mm_apply_position_embedding": _bool,
    "mm_pos_embedding_strategy": _choice("bbox_based"),
    "mm_apply_region_layer_norm": _bool,
    "mm_roi_output_size": _int(1, 64),
    "mm_use_vt_region_feature_only": _bool,
    "mm_use_region_index_token": _bool,  # must be true: config.validate_config
    "aux_image_size": _int(28, 16384),
    "aux_image_aspect_ratio": _choice("squash", "dynamic", "dynamic_square"),
    "tokenizer_model_max_length": _optional(_int(1, _BIG)),
    "vlxseek_simple_fpn_channels": _int(1, 65536),
    "vlxseek_random_weights": _bool,
    "vlxseek_aux_vision_config": lambda v: None if v is None or isinstance(v, dict) else
    "must be an object (embed_dim, num_heads, num_groups, depths) or null",
    "tie_word_embeddings": _bool,
    "text_config": lambda v: None if isinstance(v, dict) else "must be an object",
    "vision_config": lambda v: None if isinstance(v, dict) else "must be an object",
    **{key: _token_ids for key in TOKEN_ID_KEYS},
}
TEXT_RULES: Dict[str, Check] = {
    "model_type": _str,
    "hidden_size": _int(1, 65536),
    "intermediate_size": _int(1, 1 << 20),
    "num_hidden_layers": _int(1, 1024),
    "num_attention_heads": _int(1, 4096),
    "num_key_value_heads": _int(1, 4096),
    "vocab_size": _int(1, _BIG),
    "max_position_embeddings": _int(1, _BIG),
    "rms_norm_eps": _number(0.0, 1.0, lo_open=True),
    "rope_theta": _number(0.0, lo_open=True),
    "hidden_act": _activation,
    "attention_dropout": _number(0.0, 1.0),
    "initializer_range": _number(0.0),
    "use_cache": _bool,
    "use_sliding_window": _bool,
    "sliding_window": _optional(_int(1, _BIG)),
    "max_window_layers": _int(0, 1 << 20),
    "layer_types": _layer_types,
    "tie_word_embeddings": _bool,
    "rope_scaling": lambda v: None if v is None or isinstance(v, dict) else "must be an object",
    "rope_parameters": lambda v: None if v is None or isinstance(v, dict) else
    "must be an object",
    **{key: _token_ids for key in TOKEN_ID_KEYS},
}
VISION_RULES: Dict[str, Check] = {
    "model_type": _str,
    "depth": _int(1, 1024),
    "hidden_size": _int(1, 65536),
    "intermediate_size": _int(1, 1 << 20),
    "num_heads": _int(1, 4096),
    "out_hidden_size": _int(1, 65536),
    "patch_size": _int(1, 1024),
    "spatial_merge_size": _int(1, 64),
    "temporal_patch_size": _int(1, 16),
    "window_size": _int(1, 1 << 16),
    "fullatt_block_indexes": _int_list(0, 1023),
    "tokens_per_second": _number(0.0, lo_open=True),
    "in_chans": _choice(3),
    "in_channels": _choice(3),
    "hidden_act": _activation,
    "initializer_range": _number(0.0),
    "rope_parameters": lambda v: None if v is None or isinstance(v, dict) else
    "must be an object",
}
AUX_RULES: Dict[str, Check] = {
    "embed_dim": _int_list(1, 65536, 4), "num_heads": _int_list(1, 4096, 4),
    "num_groups": _int_list(1, 4096, 4), "depths": _int_list(1, 1024, 4),
}
ROPE_RULES: Dict[str, Check] = {
    "mrope_section": _int_list(1, 65536, 3),
    "rope_theta": _number(0.0, lo_open=True),
    "type": _str,
    "rope_type": _str,
}


def _text(raw: dict) -> dict:
    """The LLM keys in effect: ``text_config`` over the top-level ones."""
    nested = raw.get("text_config")
    return {**raw, **(nested if isinstance(nested, dict) else {})}


def _head_dim_ok(section: str) -> Callable[[dict, dict], Optional[str]]:
    """Attention heads divide the hidden size (and, for the LLM, the KV heads the heads)."""
    def check(_raw, sub):
        heads_key = "num_heads" if section == "vision" else "num_attention_heads"
        hidden, heads = sub.get("hidden_size"), sub.get(heads_key)
        where = "vision_config." if section == "vision" else ""
        if hidden is not None and heads is not None and hidden % heads:
            return (f"{where}hidden_size {hidden} is not divisible by {where}{heads_key} "
                    f"{heads}")
        kv = sub.get("num_key_value_heads")
        if section == "text" and heads is not None and kv is not None and heads % kv:
            return f"num_attention_heads {heads} is not divisible by num_key_value_heads {kv}"
        return None
    return check


def _mrope(_raw, text) -> Optional[str]:
    hidden, heads = text.get("hidden_size", 0), text.get("num_attention_heads", 1)
    if not hidden:
        return None
    if (hidden // heads) % 2:
        return f"the LLM's head_dim {hidden // heads} (hidden_size / heads) must be even"
    found = [(key, text[key]["mrope_section"]) for key in ("rope_scaling", "rope_parameters")
             if isinstance(text.get(key), dict) and "mrope_section" in text[key]]
    for key, section in found or [("rope_parameters", DEFAULT_MROPE_SECTION)]:
        if sum(section) != hidden // heads // 2:
            absent = "" if found else f" (absent: transformers' default {section})"
            return (f"{key}.mrope_section{absent} sums to {sum(section)}; the LLM's head_dim "
                    f"/ 2 is {hidden // heads // 2}")
    return None


def _vision_layout(_raw, vision) -> Optional[str]:
    depth = vision.get("depth")
    blocks = vision.get("fullatt_block_indexes") or []
    if depth is not None and any(b >= depth for b in blocks):
        return f"vision_config.fullatt_block_indexes {blocks} must be < depth {depth}"
    unit = vision.get("patch_size", 14) * vision.get("spatial_merge_size", 2)
    if vision.get("window_size", unit) < unit:
        return (f"vision_config.window_size {vision['window_size']} is smaller than patch_size"
                f" x spatial_merge_size = {unit}")
    head = vision.get("hidden_size", 4) // vision.get("num_heads", 1)
    return None if head % 4 == 0 else (f"vision_config.hidden_size / num_heads = {head} must be "
                                       "a multiple of 4 (rotary embedding)")


def _token_range(raw, text) -> Optional[str]:
    vocab = text.get("vocab_size")
    for key in TOKEN_ID_KEYS:
        for where, value in (("", raw.get(key)), ("text_config.", text.get(key))):
            ids = value if isinstance(value, list) else [value]
            if vocab is not None and any(i is not None and i >= vocab for i in ids):
                return f"{where}{key}={value} is outside the vocabulary (vocab_size {vocab})"
    return None


def _layers(_raw, text) -> Optional[str]:
    kinds, layers = text.get("layer_types"), text.get("num_hidden_layers")
    if kinds is not None and layers is not None and len(kinds) != layers:
        return f"layer_types has {len(kinds)} entries but num_hidden_layers is {layers}"
    return None


def _aux_heads(raw, _sub) -> Optional[str]:
    aux = raw.get("vlxseek_aux_vision_config") or {}
    dims = aux.get("embed_dim") or []
    for key in ("num_heads", "num_groups"):
        for dim, n in zip(dims, aux.get(key) or []):
            if dim % n:
                return f"vlxseek_aux_vision_config: embed_dim {dim} is not divisible by {key} {n}"
    return None


def _projector_dims(raw, text) -> Optional[str]:
    vision = raw.get("vision_config") or {}
    out = vision.get("out_hidden_size")
    declared = raw.get("mm_hidden_size")
    if declared is not None and out is not None and declared != out:
        return f"mm_hidden_size {declared} differs from vision_config.out_hidden_size {out}"
    if (raw.get("mm_projector_type") == "identity" and out is not None
            and text.get("hidden_size") not in (None, out)):
        return (f"mm_projector_type 'identity' needs vision_config.out_hidden_size ({out}) = "
                f"hidden_size ({text.get('hidden_size')})")
    return None


RELATIONS: Sequence[Tuple[str, Callable[[dict, dict], Optional[str]]]] = (
    ("text", _head_dim_ok("text")), ("vision", _head_dim_ok("vision")), ("text", _mrope),
    ("vision", _vision_layout), ("text", _token_range), ("text", _layers),
    ("top", _aux_heads), ("text", _projector_dims),
)
"""Rules between keys: ``(section the rule reads, rule(raw, section dict))``."""


def _apply(rules: Dict[str, Check], values: Any, prefix: str, problems: List[str]) -> None:
    if not isinstance(values, dict):
        return
    for key, rule in rules.items():
        if key in values:
            why = rule(values[key])
            if why:
                problems.append(f"{prefix}{key} {why}, got {values[key]!r:.80}")


def check_config_dict(raw: Any) -> List[str]:
    """Everything wrong with a checkpoint's parsed ``config.json`` (empty list = fine).

    Args:
        raw: the parsed JSON.

    Returns:
        One message per problem, each starting with the key path (``mm_roi_output_size``,
        ``text_config.hidden_size``, ``vision_config.depth``, ...). Relations between keys are
        checked only when every key involved is well-typed.
    """
    if not isinstance(raw, dict):
        return [f"config.json must hold a JSON object, got {type(raw).__name__}"]
    problems: List[str] = []
    _apply(TOP_RULES, raw, "", problems)
    _apply(TEXT_RULES, raw, "", problems)
    _apply(TEXT_RULES, raw.get("text_config"), "text_config.", problems)
    _apply(VISION_RULES, raw.get("vision_config"), "vision_config.", problems)
    aux = raw.get("vlxseek_aux_vision_config")
    _apply(AUX_RULES, aux, "vlxseek_aux_vision_config.", problems)
    if isinstance(aux, dict):
        problems += [f"vlxseek_aux_vision_config.{k} is not a known key ({', '.join(AUX_RULES)})"
                     for k in aux if k not in AUX_RULES]
    text = _text(raw)
    for key in ("rope_scaling", "rope_parameters"):
        for where, values in (("", raw), ("text_config.", raw.get("text_config")),
                              ("vision_config.", raw.get("vision_config"))):
            if isinstance(values, dict):
                _apply(ROPE_RULES, values.get(key), f"{where}{key}.", problems)
    if problems:
        return list(dict.fromkeys(problems))  # keys checked in two tables are reported once
    sections = {"top": raw, "text": text, "vision": raw.get("vision_config") or {}}
    for section, rule in RELATIONS:
        why = rule(raw, sections[section])
        if why:
            problems.append(why)
    return problems
