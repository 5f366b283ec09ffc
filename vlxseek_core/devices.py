"""Device and dtype choice for inference, and optional compilation of the vision towers."""
from __future__ import annotations

import re
from typing import Sequence

import torch

from .errors import InvalidRequestError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available else ``cpu``; validates other names.

    Raises:
        InvalidRequestError: unknown device, or ``cuda`` requested without a GPU.
    """
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device)):
        raise InvalidRequestError(f"device={device!r} is unknown (cpu, cuda, cuda:N, auto)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidRequestError(f"device={device!r} requested but torch sees no GPU")
    return device


def resolve_dtype(dtype, device: str) -> torch.dtype:
    """``auto`` → bf16 on GPU, fp32 on CPU (spec §2.8); else a named dtype.

    Raises:
        InvalidRequestError: unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise InvalidRequestError(f"dtype={dtype!r} is unknown ({', '.join(_DTYPES)}, auto)")
    return _DTYPES[name]


def compile_vision_towers(model, backend: str = "inductor",
                          towers: Sequence[str] = ("primary", "aux")) -> None:
    """``torch.compile`` the forward of the chosen vision towers (dynamic shapes: image sizes
    vary); the LLM stays eager because generation already reuses its KV cache."""
    modules = {"primary": model.model.vision_tower.image_tower,
               "aux": model.model.vision_tower_aux.image_tower}
    for name in towers:
        tower = modules[name]
        tower.forward = torch.compile(tower.forward, backend=backend, dynamic=True)
