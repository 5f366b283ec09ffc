"""A compact snapshot of a ``scripts/train_small_model.sh`` run after one of its phases.

The recipe (issue 9 §7) takes longer than a working session, and a run's folder does not outlive
its machine. A snapshot carries the run to another machine as 10-20 MB instead of the
phase's 47-94 MB: most of a checkpoint is the vocabulary embedding (151,936 x 128 of the small
model's 23.4 M parameters) and the primary ViT, which stays frozen from its random
initialisation. The snapshot keeps, per tensor, nothing (equal to the run's ``init`` in the
phase's dtype), the changed rows, or the whole tensor, and rebuilds the rest from ``init``,
which ``make-tiny-model`` writes again byte for byte from its seed (checked by SHA-256). The
embedding changes only in the data's rows while the loss's softmax runs over them alone
(``--loss-vocab data --loss-negatives 0``: AdamW without weight decay leaves a row with a zero
gradient exactly as it was); once the sampled column for the other rows is on, every row moves
a little, nearly the same way (rank 1 holds 94 % of the drift of the recipe's 1a model, rank
16 99 %). Such an embedding is kept as the rows the data trained exactly (those that moved
far, or that a rank-``DRIFT_RANK`` fit misses) and the drift of the others at that rank: then
the rebuilt model is not bit-identical, and ``SNAPSHOT.json`` says how close (``residual``:
the relative error of the drift).

    python -m vlxseek_core.training.snapshot save RUN PHASE DEST
    python -m vlxseek_core.training.snapshot restore DEST RUN

``restore`` writes ``RUN/init``, the phase's model, and the finished-phase markers of the
phases that led to it (``vlxseek_training.json``, the forming probes ``lookup_*.json``), so that
``scripts/train_small_model.sh RUN`` skips them, writes its data sets again (fixed seeds) and
trains on from the phase.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Sequence

from ..errors import CheckpointError
from .run import file_sha256
from .ship import lineage, portable

MANIFEST = "SNAPSHOT.json"
WEIGHTS = "weights.safetensors"
CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json",
                "tokenizer_config.json")
INIT_ARGS = ["--preset", "small", "--aux-aspect", "dynamic", "--space-variant-similarity",
             "0.9", "--seed", "0"]
"""``make-tiny-model``'s options for the recipe's ``init`` (as in scripts/train_small_model.sh)."""


def _load(path: str) -> Dict:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path!r} is not a readable safetensors file: {exc}") from exc


DRIFT_MIN_ROWS = 65536
"""A tensor this long (the vocabulary embedding) whose rows all changed is kept as drift."""
DRIFT_RANK = 16
DRIFT_OUTLIER = 2.0
"""Rows that moved, or that the low-rank fit misses, by more than this many times the median
row are kept exactly."""


def _delta(tensor, ref):
    """How ``tensor`` differs from ``ref`` (the init's tensor): ``("init", None)``,
    ``("rows", index)`` (an int64 index of the changed rows along dim 0, fewer than half),
    ``("drift", None)`` (a vocabulary embedding whose every row moved: the loss's sampled
    column pushes the rows off the data's shortlist down a little, the same way, and the
    data's own rows far; ``_drift`` splits them) or ``("whole", None)``."""
    import torch

    if ref is None or ref.shape != tensor.shape:
        return "whole", None
    ref = ref.to(tensor.dtype)
    if torch.equal(tensor, ref):
        return "init", None
    if tensor.dim() >= 1:
        changed = (tensor != ref).reshape(tensor.shape[0], -1).any(dim=1)
        if 2 * int(changed.sum()) < tensor.shape[0]:
            return "rows", changed.nonzero().flatten()
        if tensor.dim() == 2 and tensor.shape[0] >= DRIFT_MIN_ROWS:
            return "drift", None
    return "whole", None


def _others(length: int, index):
    """A bool mask over ``length`` rows, true off the int64 row ``index``: the drift's rows."""
    import torch

    rest = torch.ones(length, dtype=torch.bool)
    rest[index] = False
    return rest


def _drift(tensor, ref):
    """The low-rank factors of ``tensor - ref`` over the rows not kept exactly: ``(exact, u,
    v, residual)``. ``exact`` (an int64 row index) holds the rows that moved, or that the
    rank-``DRIFT_RANK`` fit misses, by more than ``DRIFT_OUTLIER`` times the median row (rows
    the data trained, whose change is no drift); ``u`` (rows x DRIFT_RANK) and ``v``
    (DRIFT_RANK x columns) are float16 and ``residual`` is the relative Frobenius error of
    ``u @ v`` against the drift it stands for."""
    import torch

    drift = tensor.float() - ref.to(tensor.dtype).float()
    moved = drift.norm(dim=1)
    exact = (moved > DRIFT_OUTLIER * moved.median()).nonzero().flatten()

    def fit(exact):
        rest = _others(tensor.shape[0], exact)
        u, s, v = torch.linalg.svd(drift[rest], full_matrices=False)
        return rest, (u[:, :DRIFT_RANK] * s[:DRIFT_RANK]).half(), v[:DRIFT_RANK].half()

    for _ in range(2):  # fit, add the rows it misses to the exact ones
        rest, u, v = fit(exact)
        missed = torch.zeros_like(rest)
        miss = (drift[rest] - u.float() @ v.float()).norm(dim=1)
        missed[rest] = miss > DRIFT_OUTLIER * miss.median()
        exact = torch.cat([exact, missed.nonzero().flatten()]).unique()
    rest, u, v = fit(exact)
    residual = float((drift[rest] - u.float() @ v.float()).norm()
                     / drift[rest].norm().clamp_min(1e-30))
    return exact, u.contiguous(), v.contiguous(), residual


def save_snapshot(run_dir: str, phase: str, dest: str,
                  init_args: Sequence[str] = tuple(INIT_ARGS)) -> Dict:
    """Write the snapshot of ``run_dir/phase`` to ``dest`` (replaced as a whole).

    ``init_args`` are the ``make-tiny-model`` options that wrote ``run_dir/init`` (the
    recipe's by default; ``restore`` runs them where the run folder has no init).

    Returns:
        The manifest: phase, lineage, the init's command and checksums, the phase's weights'
        checksum, whether the rebuild is ``exact``, and per tensor ``init``, ``rows`` (with
        their count), ``drift`` (with the exact rows' count, the rank and the residual) or
        ``whole``.

    Raises:
        CheckpointError: the phase is unfinished, its lineage does not start at
            ``run_dir/init``, or a weights file is unreadable.
    """
    from safetensors.torch import save_file

    src, init = os.path.join(run_dir, phase), os.path.join(run_dir, "init")
    chain = lineage(src)
    with open(os.path.join(chain[0], "vlxseek_training.json"), encoding="utf-8") as fh:
        start = json.load(fh).get("start_model")
    if os.path.abspath(start or "") != os.path.abspath(init):
        raise CheckpointError(f"the lineage of {src!r} starts at {start!r}, not at {init!r}")
    weights, ref = _load(os.path.join(src, "model.safetensors")), _load(
        os.path.join(init, "model.safetensors"))
    stored, tensors = {}, {}
    for key, tensor in sorted(weights.items()):
        kind, rows = _delta(tensor, ref.get(key))
        tensors[key] = {"kind": kind, "dtype": str(tensor.dtype).replace("torch.", "")}
        if kind == "drift":
            rows, stored[f"{key}/drift_u"], stored[f"{key}/drift_v"], residual = _drift(
                tensor, ref[key])
            tensors[key].update(rank=DRIFT_RANK, residual=round(residual, 6))
        if kind in ("rows", "drift"):
            stored[f"{key}/index"], stored[f"{key}/rows"] = rows, tensor[rows].contiguous()
            tensors[key]["rows"] = len(rows)
        elif kind == "whole":
            stored[key] = tensor.contiguous()
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    save_file(stored, os.path.join(dest, WEIGHTS))
    for name in CONFIG_FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
    for here in chain:
        out = os.path.join(dest, "phases", os.path.basename(here))
        os.makedirs(out)
        for path in [os.path.join(here, "vlxseek_training.json")] + sorted(
                glob.glob(os.path.join(here, "lookup_*.json"))):
            with open(path, encoding="utf-8") as fh:
                info = portable(json.load(fh), run_dir)
            with open(os.path.join(out, os.path.basename(path)), "w", encoding="utf-8") as fh:
                json.dump(info, fh, indent=2, sort_keys=True)
    manifest = {
        "phase": phase, "phases": [os.path.basename(p) for p in chain],
        "init": {"args": list(init_args), "sha256": {
            n: file_sha256(os.path.join(init, n)) for n in sorted(os.listdir(init))
            if os.path.isfile(os.path.join(init, n))}},
        "tokenizer_sha256": file_sha256(os.path.join(src, "tokenizer.json")),
        "model_sha256": file_sha256(os.path.join(src, "model.safetensors")),
        "exact": all(t["kind"] != "drift" for t in tensors.values()), "tensors": tensors}
    with open(os.path.join(dest, MANIFEST), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
    return manifest


def _localise(value, run_dir: str):
    """``value`` (parsed JSON) with ``RUN/...`` paths under ``run_dir`` (``portable`` undone)."""
    if isinstance(value, dict):
        return {_localise(k, run_dir): _localise(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_localise(v, run_dir) for v in value]
    if isinstance(value, str):
        return re.sub(r"(?<!\S)RUN(?=/|\s|$)", lambda _: os.path.abspath(run_dir), value)
    return value


def _make_init(init: str, manifest: Dict) -> None:
    """Write ``init`` with ``make-tiny-model`` (unless there) and check it against the manifest."""
    if not os.path.isdir(init):
        from .. import cli

        if cli.main(["make-tiny-model", init] + manifest["init"]["args"]) != 0:
            raise CheckpointError(f"make-tiny-model could not write {init!r}")
    for name, digest in manifest["init"]["sha256"].items():
        path = os.path.join(init, name)
        if not os.path.isfile(path) or file_sha256(path) != digest:
            raise CheckpointError(
                f"{path!r} is not the init the snapshot was taken from (make-tiny-model "
                f"{' '.join(manifest['init']['args'])} wrote another on this machine)")


def _rebuild(info: Dict, key: str, ref: Dict, stored: Dict):
    """One tensor of the phase from the init's (``ref``) and the snapshot's (``stored``)."""
    import torch

    if info["kind"] == "whole":
        return stored[key]
    dtype = getattr(torch, info["dtype"])
    tensor = ref[key].to(dtype)
    if info["kind"] == "drift":
        rest = _others(len(tensor), stored[f"{key}/index"])
        drift = stored[f"{key}/drift_u"].float() @ stored[f"{key}/drift_v"].float()
        tensor[rest] = (tensor[rest].float() + drift).to(dtype)
    if info["kind"] in ("rows", "drift"):
        tensor[stored[f"{key}/index"]] = stored[f"{key}/rows"]
    return tensor


def restore_snapshot(src: str, run_dir: str) -> str:
    """Rebuild the snapshot ``src`` into the run folder ``run_dir``; returns the phase's folder.

    The phase's ``model.safetensors`` is rebuilt tensor for tensor, checked against the
    manifest's SHA-256 unless an embedding was kept as drift (``"exact": false``: then the
    drift is rebuilt at low rank); an existing phase folder of the same name is replaced.

    Raises:
        CheckpointError: the manifest or weights are missing or unreadable, ``run_dir/init``
            differs from the snapshot's init, or the rebuilt weights differ from the phase's.
    """
    from safetensors.torch import save_file

    try:
        with open(os.path.join(src, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
        phase, tensors = manifest["phase"], manifest["tensors"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{src!r} is not a run snapshot ({exc!r})") from exc
    init = os.path.join(run_dir, "init")
    _make_init(init, manifest)
    ref, stored = _load(os.path.join(init, "model.safetensors")), _load(os.path.join(src, WEIGHTS))
    try:
        weights = {key: _rebuild(info, key, ref, stored) for key, info in tensors.items()}
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{src!r} does not rebuild on its init ({exc!r})") from exc
    out = os.path.join(run_dir, phase)
    if os.path.isdir(out):
        shutil.rmtree(out)
    for name in manifest["phases"]:
        os.makedirs(os.path.join(run_dir, name), exist_ok=True)
        for path in glob.glob(os.path.join(src, "phases", name, "*.json")):
            with open(path, encoding="utf-8") as fh:
                info = _localise(json.load(fh), run_dir)
            with open(os.path.join(run_dir, name, os.path.basename(path)), "w",
                      encoding="utf-8") as fh:
                json.dump(info, fh, indent=2, sort_keys=True)
    for name in CONFIG_FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
    shutil.copyfile(os.path.join(init, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    checks = [("tokenizer.json", manifest["tokenizer_sha256"])]
    if manifest.get("exact", True):  # a drifted embedding is rebuilt close, not bit for bit
        checks.append(("model.safetensors", manifest["model_sha256"]))
    for name, digest in checks:
        if file_sha256(os.path.join(out, name)) != digest:
            raise CheckpointError(f"the rebuilt {os.path.join(out, name)!r} differs from the "
                                  "phase the snapshot was taken from")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlxseek_core.training.snapshot",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="write the snapshot of RUN/PHASE to DEST")
    s.add_argument("run")
    s.add_argument("phase")
    s.add_argument("dest")
    s.add_argument("--init-args", default=" ".join(INIT_ARGS),
                   help="make-tiny-model's options that wrote RUN/init (default: the recipe's)")
    r = sub.add_parser("restore", help="rebuild the snapshot SRC into the run folder RUN")
    r.add_argument("src")
    r.add_argument("run")
    args = parser.parse_args(argv)
    try:
        if args.command == "save":
            manifest = save_snapshot(args.run, args.phase, args.dest, args.init_args.split())
            files = glob.glob(os.path.join(args.dest, "**"), recursive=True)
            size = sum(os.path.getsize(p) for p in files if os.path.isfile(p))
            kinds = [t["kind"] for t in manifest["tensors"].values()]
            drift = [f"{k} (residual {t['residual']:.3f})"
                     for k, t in manifest["tensors"].items() if t["kind"] == "drift"]
            print(f"{args.dest}: {size / 1e6:.1f} MB; tensors: {kinds.count('init')} as init, "
                  f"{kinds.count('rows')} by rows, {kinds.count('whole')} whole"
                  + (f", drift at rank {DRIFT_RANK}: {', '.join(drift)}" if drift else ""))
        else:
            print(restore_snapshot(args.src, args.run))
    except CheckpointError as exc:
        parser.exit(2, f"snapshot: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
