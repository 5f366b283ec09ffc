"""Load and save VLM-FO1 checkpoints under the reference's state_dict names (spec §2.9, §8).

Safetensors only: pickled weights are never loaded (a directory with only ``.bin``/``.pt``
files is refused with a conversion hint), and ``trust_remote_code`` is never used.

Everything read from the directory is checked before use, and every problem is a
:class:`~vlxseek_core.errors.CheckpointError` naming the file and key: ``config.json`` values
(types, ranges, relations; :mod:`vlxseek_core.config_rules`), and the shard index
(``model.safetensors.index.json``): well-formed JSON with a ``weight_map`` of tensor names to
``*.safetensors`` files that exist *inside* the checkpoint folder (absolute paths, ``..`` and
symlinks resolving outside are refused, never followed; in a Hugging Face cache snapshot,
links into the repo's own ``blobs/`` are inside).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

import torch

from .config import VLMFO1Config, validate_config
from .config_rules import check_config_dict
from .davit import florence_to_reference, reference_to_florence
from .errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TIED_LM_HEAD = "lm_head.weight"


@dataclass
class LoadReport:
    """What a load found. Keys use the reference names."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        parts = []
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape-mismatched", self.mismatched)):
            if items:
                shown = ", ".join(str(i) for i in items[:limit])
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {name} keys: {shown}{more}")
        return "; ".join(parts) or "all keys matched"


def read_json(path: str):
    """Parse a checkpoint's JSON file.

    Raises:
        CheckpointError: unreadable file, not UTF-8, or malformed JSON.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _containment_root(directory: str) -> str:
    """The folder every shard must resolve into: the checkpoint folder, or for a Hugging Face
    cache snapshot (``models--owner--name/snapshots/REV``, whose files link to
    ``../../blobs/``) the repo's cache folder."""
    real = os.path.realpath(directory)
    parent = os.path.dirname(real)
    if (os.path.basename(parent) == "snapshots"
            and os.path.basename(os.path.dirname(parent)).startswith("models--")):
        return os.path.dirname(parent)
    return real


def index_shards(directory: str) -> List[str]:
    """The shard paths that ``model.safetensors.index.json`` lists, each checked.

    Raises:
        CheckpointError: malformed JSON, not ``{"weight_map": {tensor name: file name}}``,
            a file name that is not a relative ``*.safetensors`` path inside the folder
            (absolute, with ``..``, or a symlink resolving outside), or a missing shard.
    """
    index = os.path.join(directory, INDEX_NAME)
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not isinstance(data.get("metadata", {}), dict)):
        raise CheckpointError(f"{index}: expected an object with a non-empty \"weight_map\" "
                              "object (tensor name -> shard file) and an optional \"metadata\" "
                              "object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: weight_map keys and values must be strings")
    root = _containment_root(directory)
    shards, missing = [], []
    for name in sorted(set(weight_map.values())):
        if (not name.endswith(".safetensors") or os.path.isabs(name) or "\0" in name
                or ".." in re.split(r"[\\/]", name)):
            raise CheckpointError(f"{index}: shard path {name!r} must be a relative "
                                  "*.safetensors file name inside the checkpoint folder")
        path = os.path.join(directory, name)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise CheckpointError(f"{index}: shard {name!r} resolves outside the checkpoint "
                                  f"folder (to {os.path.realpath(path)!r}); refused")
        (shards if os.path.isfile(path) else missing).append(path)
    if missing:
        raise CheckpointError(f"{index} lists {len(missing)} missing shard(s): "
                              + ", ".join(os.path.basename(m) for m in missing[:5]))
    return shards


def safetensors_files(directory: str) -> List[str]:
    """The checkpoint's safetensors shards (from the index when present, see
    :func:`index_shards`).

    Raises:
        CheckpointError: no directory, no safetensors, only pickled weights, or a bad index.
    """
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    if os.path.isfile(os.path.join(directory, INDEX_NAME)):
        return index_shards(directory)
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if files:
        return [os.path.join(directory, f) for f in files]
    pickles = [f for f in os.listdir(directory) if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise CheckpointError(
            f"{directory} holds only pickled weights ({', '.join(pickles[:3])}); vlxseek loads "
            "safetensors only because unpickling can run code. Convert once in a trusted "
            "environment: `python -c \"import torch, safetensors.torch as st; "
            "st.save_file(torch.load('pytorch_model.bin', weights_only=True), "
            "'model.safetensors')\"`")
    raise CheckpointError(f"no *.safetensors weights in {directory}")


def iter_reference_tensors(directory: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """Yield ``(reference key, tensor)`` from every shard (memory-mapped)."""
    from safetensors import safe_open

    for path in safetensors_files(directory):
        try:
            with safe_open(path, framework="pt") as fh:
                for key in fh.keys():
                    yield key, fh.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path}: {exc}") from exc


def load_config(directory: str) -> VLMFO1Config:
    """Read and validate ``config.json``.

    Raises:
        CheckpointError: missing/unreadable/malformed config, a value of the wrong type or
            range (the message names the key, see :mod:`vlxseek_core.config_rules`), or
            unsupported architecture choices.
    """
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no config.json in {directory!r}")
    problems = check_config_dict(read_json(path))
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))

    def check(config):
        # again on the values in effect: absent keys take defaults that must fit the rest
        return [f"{p} (absent keys take transformers' defaults)"
                for p in check_config_dict(config.to_dict())] + validate_config(config)

    return read_checked_config(directory, path, VLMFO1Config, check)


def read_checked_config(directory: str, path: str, config_class, check):
    """``config_class.from_pretrained(directory)``, refused if ``check(config)`` lists problems.

    Shared by the families' ``load_config`` (``path`` is the ``config.json`` the messages name).

    Raises:
        CheckpointError: ``check`` found problems (all joined in the message), or reading or
            checking raised (a ``CheckpointError`` passes unchanged, any other error is wrapped).
    """
    try:
        config = config_class.from_pretrained(directory)
        problems = check(config)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers' validators raise many types
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    return config


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_empty_model(config: VLMFO1Config, dtype: torch.dtype):
    """Construct the model without initialising weights (fast for 3B), in ``dtype``."""
    from transformers.initialization import no_init_weights

    from .modeling import VLMFO1ForCausalLM

    with no_init_weights(), _default_dtype(dtype):
        return VLMFO1ForCausalLM(config)


def model_state_names(model) -> Dict[str, tuple]:
    """Reference key → shape of every tensor the model expects (tied lm_head omitted)."""
    names = {}
    for key, tensor in model.state_dict().items():
        if key == TIED_LM_HEAD and model.config.tie_word_embeddings:
            continue
        names[florence_to_reference(key)] = tuple(tensor.shape)
    return names


def choose_attn_implementation(device: str, dtype: torch.dtype, requested: str = "auto") -> str:
    """``auto`` → ``flash_attention_2`` on CUDA in bf16/fp16 when ``flash_attn`` is installed,
    else ``sdpa``; explicit ``eager``/``sdpa``/``flash_attention_2`` are returned as given.

    Raises:
        ValueError: unknown name.
    """
    if requested not in ("auto", "eager", "sdpa", "flash_attention_2"):
        raise ValueError(f"unknown attn_implementation {requested!r}")
    if requested != "auto":
        return requested
    if str(device).startswith("cuda") and dtype in (torch.bfloat16, torch.float16):
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def set_attention(model, implementation: str) -> None:
    """Use ``implementation`` for the LLM and the primary ViT. The DaViT's channel attention has
    a "head dim" equal to the number of spatial tokens, far beyond flash-attention limits
    (spec §8), so it stays on sdpa/eager."""
    model.model.set_attn_implementation(implementation)
    aux = "eager" if implementation == "eager" else "sdpa"
    model.model.vision_tower_aux.image_tower.set_attn_implementation(aux)


def load_model(directory: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               allow_key_mismatch: bool = False, attn_implementation: str = "auto"):
    """Load a VLM-FO1 checkpoint directory.

    Args:
        directory: holds ``config.json`` and safetensors weights with reference key names.
        dtype: parameter dtype of towers and LLM.
        device: torch device string.
        allow_key_mismatch: load even with missing/unexpected keys (left random/ignored).
        attn_implementation: see :func:`choose_attn_implementation`.

    Returns:
        ``(model in eval mode, LoadReport)``.

    Raises:
        CheckpointError: unreadable checkpoint, or any key mismatch unless allowed.
    """
    config = load_config(directory)
    try:
        model = build_empty_model(config, dtype)
    except Exception as exc:  # noqa: BLE001 - a config the checks let through, torch errors
        raise CheckpointError(f"cannot build the model from {directory}/config.json: "
                              f"{type(exc).__name__}: {exc}") from exc
    expected = model.state_dict()
    state, report = {}, LoadReport()
    for ref_key, tensor in iter_reference_tensors(directory):
        key = reference_to_florence(ref_key)
        if key not in expected:
            report.unexpected.append(ref_key)
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            report.mismatched.append((ref_key, tuple(tensor.shape), tuple(expected[key].shape)))
            continue
        state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    tied = config.tie_word_embeddings
    if tied and TIED_LM_HEAD not in state and "model.embed_tokens.weight" in state:
        state[TIED_LM_HEAD] = state["model.embed_tokens.weight"]
    report.missing = sorted(florence_to_reference(k) for k in expected if k not in state)
    if not report.clean and not allow_key_mismatch:
        raise CheckpointError(f"checkpoint {directory} does not match the model: "
                              f"{report.summary()}")
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    set_attention(model, choose_attn_implementation(device, dtype, attn_implementation))
    return model.to(device).eval(), report


def save_model(model, directory: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` with reference key names.

    The tied ``lm_head.weight`` is not written when ``tie_word_embeddings`` is set.
    """
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    model.config.save_pretrained(directory)
    tensors = {}
    for key, tensor in model.state_dict().items():
        if key == TIED_LM_HEAD and model.config.tie_word_embeddings:
            continue
        tensors[florence_to_reference(key)] = tensor.detach().contiguous().cpu()
    save_file(tensors, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})
