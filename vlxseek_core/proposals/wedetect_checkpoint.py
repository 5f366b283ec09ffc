"""WeDetect-Uni checkpoints: locating, reading and *strictly* loading them (spec
``vlx-seek-1.5.md`` §5).

The released ``wedetect_base_uni.pth`` (Hugging Face repo ``fushh7/WeDetect``) is an mmengine
state_dict of the training graph. Its key names are kept as they are, except the backbone,
which is renamed to timm's ConvNeXt (a fixed table, :data:`BACKBONE_RENAMES`; ``P`` =
``backbone.image_model.model.``)::

    P downsample_layers.0.{0,1}.*    → backbone.stem_{0,1}.*
    P downsample_layers.{i}.{0,1}.*  → backbone.stages_{i}.downsample.{0,1}.*   (i = 1, 2, 3)
    P stages.{i}.{j}.dwconv.*        → backbone.stages_{i}.blocks.{j}.conv_dw.*
      … .norm.* → .norm.*, .pwconv1.* → .mlp.fc1.*, .pwconv2.* → .mlp.fc2.*, .gamma → .gamma

``neck.*``, ``bbox_head.head_module.*`` (mmcv ConvModule ``{0,1}.conv`` / ``{0,1}.bn`` and the
final ``2.*`` conv) and ``embeddings`` load under their own names. The training ConvNeXt also
carries an ImageNet classifier the detector never uses (``…model.norm.{weight,bias}`` [C4],
``…model.head.{weight,bias}`` [K, C4] / [K]): those four keys are *optional* — shape-checked and
discarded when present. Everything else is strict: any missing, unexpected or mis-shaped key
raises :class:`~vlxseek_core.errors.StateDictMismatchError` naming the keys in the file's own
spelling. (The reference instead renames the head keys by substring replacement and loads with
``strict=False``, which hides missing keys.)

Files: ``.safetensors`` (``safetensors.torch.load_file``) or a pickle (``.pth``/``.pt``/``.bin``)
read with ``torch.load(weights_only=True)``; an mmengine ``{"state_dict": …}`` wrapper is
unwrapped.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from ..errors import CheckpointError, StateDictMismatchError
from .wedetect_model import BASE_CONFIG, TINY_CONFIG, WeDetectConfig, WeDetectUni

__all__ = ["BACKBONE_RENAMES", "CHECKPOINT_BACKBONE_PREFIX", "CLASSIFIER_KEYS", "WEIGHTS_FILENAME",
           "checkpoint_key_to_model", "model_key_to_checkpoint", "expected_checkpoint_shapes",
           "read_state_dict", "load_checkpoint_state", "resolve_wedetect_location",
           "write_tiny_wedetect"]

#: File name of the released weights in the hub repo (and looked for in a directory).
WEIGHTS_FILENAME = "wedetect_base_uni.pth"
#: Where the training graph kept its ConvNeXt.
CHECKPOINT_BACKBONE_PREFIX = "backbone.image_model.model."
_MODEL_BACKBONE_PREFIX = "backbone."
#: Unused ImageNet classifier of the training ConvNeXt (optional, discarded).
CLASSIFIER_KEYS = tuple(CHECKPOINT_BACKBONE_PREFIX + k for k in
                        ("norm.weight", "norm.bias", "head.weight", "head.bias"))
#: Rows of that classifier in the released file (the training ConvNeXt's default 1000 classes).
RELEASED_CLASSIFIER_ROWS = 1000

#: (checkpoint name, timm FeatureListNet name) below the two backbone prefixes.
BACKBONE_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("downsample_layers.0.{k}.{p}", "stem_{k}.{p}"),
    ("downsample_layers.{s}.{k}.{p}", "stages_{s}.downsample.{k}.{p}"),
    ("stages.{i}.{b}.dwconv.{p}", "stages_{i}.blocks.{b}.conv_dw.{p}"),
    ("stages.{i}.{b}.norm.{p}", "stages_{i}.blocks.{b}.norm.{p}"),
    ("stages.{i}.{b}.pwconv1.{p}", "stages_{i}.blocks.{b}.mlp.fc1.{p}"),
    ("stages.{i}.{b}.pwconv2.{p}", "stages_{i}.blocks.{b}.mlp.fc2.{p}"),
    ("stages.{i}.{b}.gamma", "stages_{i}.blocks.{b}.gamma"),
)
# stage 0 has no downsample layer (its "downsample_layers.0" is the stem), hence s ∈ 1..9
_FIELDS = {"k": "[01]", "s": "[1-9]", "i": "[0-9]", "b": "[0-9]+", "p": "weight|bias"}


def _compile(template: str) -> "re.Pattern[str]":
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(f"(?P<{p[1:-1]}>{_FIELDS[p[1:-1]]})" if p.startswith("{")
                              else re.escape(p) for p in parts))


_FORWARD = [(_compile(src), dst) for src, dst in BACKBONE_RENAMES]
_BACKWARD = [(_compile(dst), src) for src, dst in BACKBONE_RENAMES]


def _rename(key: str, rules) -> Optional[str]:
    for pattern, template in rules:
        m = pattern.fullmatch(key)
        if m:
            return template.format(**m.groupdict())
    return None


def checkpoint_key_to_model(key: str) -> Optional[str]:
    """The model's name for a checkpoint key; ``None`` for a key the model has no place for
    (an unknown backbone key, or one already in timm spelling). Classifier keys → ``None``."""
    if key.startswith(CHECKPOINT_BACKBONE_PREFIX):
        new = _rename(key[len(CHECKPOINT_BACKBONE_PREFIX):], _FORWARD)
        return None if new is None else _MODEL_BACKBONE_PREFIX + new
    if key.startswith(_MODEL_BACKBONE_PREFIX):
        return None  # only the file's own spelling is accepted
    return key


def model_key_to_checkpoint(key: str) -> str:
    """Inverse of :func:`checkpoint_key_to_model` for every key of :class:`WeDetectUni`."""
    if key.startswith(_MODEL_BACKBONE_PREFIX):
        old = _rename(key[len(_MODEL_BACKBONE_PREFIX):], _BACKWARD)
        if old is None:  # pragma: no cover - a timm naming change would land here
            raise CheckpointError(f"no checkpoint name for backbone parameter {key!r} "
                                  f"(timm ConvNeXt naming changed?)")
        return CHECKPOINT_BACKBONE_PREFIX + old
    return key


def expected_checkpoint_shapes(config: WeDetectConfig = BASE_CONFIG, *,
                               classifier_rows: Optional[int] = RELEASED_CLASSIFIER_ROWS
                               ) -> Dict[str, List[int]]:
    """Every key (checkpoint spelling) → shape of a checkpoint for ``config``, in model order.

    Built on the meta device (no memory). ``classifier_rows``: add the optional ImageNet
    classifier with that many rows (``None``: leave it out).
    """
    with torch.device("meta"):
        model = WeDetectUni(config)
    shapes = {model_key_to_checkpoint(k): list(v.shape) for k, v in model.state_dict().items()}
    if classifier_rows is not None:
        c4 = config.dims[-1]
        for key, shape in zip(CLASSIFIER_KEYS, ([c4], [c4], [classifier_rows, c4],
                                                [classifier_rows])):
            shapes[key] = shape
    return shapes


def _check_classifier(state: Mapping[str, torch.Tensor], c4: int) -> List[Tuple]:
    """Shape problems of the optional classifier keys that are present."""
    bad = []
    norm_w, norm_b, head_w, head_b = CLASSIFIER_KEYS
    for key in (norm_w, norm_b):
        if key in state and tuple(state[key].shape) != (c4,):
            bad.append((key, list(state[key].shape), [c4]))
    if head_w in state:
        w = state[head_w]
        rows = w.shape[0] if w.dim() == 2 else -1
        if w.dim() != 2 or w.shape[1] != c4:
            bad.append((head_w, list(w.shape), ["K", c4]))
        if head_b in state and tuple(state[head_b].shape) != (rows,):
            bad.append((head_b, list(state[head_b].shape), [rows if rows >= 0 else "K"]))
    elif head_b in state and state[head_b].dim() != 1:
        bad.append((head_b, list(state[head_b].shape), ["K"]))
    return bad


def _summary(items: List, limit: int = 12) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def load_checkpoint_state(model: WeDetectUni, state: Mapping[str, torch.Tensor],
                          source: str = "checkpoint") -> None:
    """Load a checkpoint state_dict (file spelling) into ``model`` strictly.

    Raises:
        StateDictMismatchError: missing, unexpected or mis-shaped keys (all listed in the
            file's spelling; the message shows the first 12 of each with counts).
        CheckpointError: a value is not a tensor.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    mismatched = _check_classifier(state, model.config.dims[-1])
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
        if key in CLASSIFIER_KEYS:
            continue  # the detector never uses the ImageNet classifier
        name = checkpoint_key_to_model(key)
        if name is None or name not in expected:
            unexpected.append(key)
        elif tuple(value.shape) != expected[name]:
            mismatched.append((key, list(value.shape), list(expected[name])))
        else:
            mapped[name] = value
    reported = {m[0] for m in mismatched}  # a mis-shaped key is not also "missing"
    missing = [ck for k in expected
               if k not in mapped and (ck := model_key_to_checkpoint(k)) not in reported]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match WeDetect-Uni {_describe(model.config)}:"]
        if missing:
            lines.append(f"{len(missing)} missing key(s): {_summary(missing)}")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected key(s): {_summary(unexpected)}")
        if mismatched:
            lines.append(f"{len(mismatched)} shape mismatch(es) (key, file, expected): "
                         f"{_summary(mismatched)}")
        raise StateDictMismatchError("; ".join(lines), missing, unexpected, mismatched)
    model.load_state_dict(mapped, strict=True)


def _describe(config: WeDetectConfig) -> str:
    return f"(dims {list(config.dims)}, depths {list(config.depths)}, " \
           f"{config.num_prompts}×{config.embed_dims} prompts)"


def read_state_dict(path: Union[str, "os.PathLike[str]"]) -> Dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` (CPU).

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``
    (no arbitrary code runs), unwrapping mmengine's ``{"state_dict": …}``.

    Raises:
        CheckpointError: unreadable file, pickle with non-tensor objects that ``weights_only``
            refuses, or not a mapping of names to tensors.
    """
    path = os.fspath(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/safetensors raise many types
        hint = ("" if path.endswith(".safetensors") else
                " (torch.load(weights_only=True) refuses pickled Python objects; if the file "
                "holds training state, extract its 'state_dict' once in a trusted environment "
                "and save it with safetensors)")
        raise CheckpointError(f"cannot read WeDetect weights {path!r}: "
                              f"{type(exc).__name__}: {exc}{hint}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"WeDetect weights {path!r} hold no state_dict "
                              f"(got {type(state).__name__})")
    return dict(state)


def _looks_local(text: str) -> bool:
    return (os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text
            or text.count("/") != 1 or text.endswith((".pth", ".pt", ".bin", ".safetensors")))


def resolve_wedetect_location(model: Union[str, "os.PathLike[str]"],
                              local_files_only: Optional[bool] = None
                              ) -> Tuple[str, WeDetectConfig]:
    """A weights file and its architecture for ``model``.

    ``model`` is a weights file (base architecture), a directory (``config.json`` with a
    ``"wedetect"`` architecture dict, else base; weights ``model.safetensors`` or
    :data:`WEIGHTS_FILENAME`), or a hub repo id ``owner/name`` from which
    :data:`WEIGHTS_FILENAME` is fetched with ``huggingface_hub`` (cached; ``local_files_only``
    forbids the network).

    Raises:
        CheckpointError: a missing path, a directory without weights, a bad ``config.json``,
            or a hub fetch that failed.
    """
    text = os.path.expanduser(os.fspath(model))
    if os.path.isfile(text):
        return text, BASE_CONFIG
    if os.path.isdir(text):
        config = BASE_CONFIG
        cfg_path = Path(text) / "config.json"
        if cfg_path.is_file():
            try:
                config = WeDetectConfig.from_dict(json.loads(cfg_path.read_text())["wedetect"])
            except (KeyError, TypeError, ValueError, RecursionError) as exc:
                raise CheckpointError(f"{cfg_path}: no valid 'wedetect' architecture: "
                                      f"{type(exc).__name__}: {exc}") from exc
        for name in ("model.safetensors", WEIGHTS_FILENAME):
            if (Path(text) / name).is_file():
                return str(Path(text) / name), config
        raise CheckpointError(f"WeDetect directory {text!r} has neither model.safetensors nor "
                              f"{WEIGHTS_FILENAME}")
    if isinstance(model, os.PathLike) or _looks_local(text):
        raise CheckpointError(f"WeDetect weights {text!r} do not exist")
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=text, filename=WEIGHTS_FILENAME,
                               local_files_only=bool(local_files_only))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated, disk full
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"cannot get {WEIGHTS_FILENAME} from hub repo {text!r}: "
                              f"{type(exc).__name__}: {first_line}") from exc
    return path, BASE_CONFIG


def write_tiny_wedetect(directory: Union[str, "os.PathLike[str]"], *,
                        config: WeDetectConfig = TINY_CONFIG, seed: int = 0) -> Path:
    """Write a random WeDetect-Uni checkpoint directory (tests, demos; boxes are meaningless).

    Files: ``model.safetensors`` in the *released* key spelling (including a 10-row optional
    classifier, so loading exercises the renaming and the classifier check) and
    ``config.json`` (``{"wedetect": config, "vlxseek_random_weights": true}``). Seeded; the
    global RNG state is left untouched. Returns the directory.
    """
    from safetensors.torch import save_file

    from .tiny import RANDOM_WEIGHTS_KEY

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = WeDetectUni(config)
        state = {}
        for key, value in model.state_dict().items():
            if key.endswith("running_mean"):  # non-trivial BN statistics
                value = torch.randn_like(value) * 0.1
            elif key.endswith("running_var"):
                value = torch.rand_like(value) + 0.5
            state[model_key_to_checkpoint(key)] = value.detach().clone().contiguous()
        c4 = config.dims[-1]
        for key, shape in zip(CLASSIFIER_KEYS, ((c4,), (c4,), (10, c4), (10,))):
            state[key] = torch.randn(shape)
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(
        {"model_type": "wedetect_uni", "wedetect": config.to_dict(), RANDOM_WEIGHTS_KEY: True},
        indent=2, sort_keys=True) + "\n")
    return out
