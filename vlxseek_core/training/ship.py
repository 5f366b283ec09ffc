"""Ship the scene model of a finished ``scripts/train_small_model.sh`` run (issue 9 §7).

The committed checkpoint carries what reproduces it: one ``training/NN_<phase>.json`` per phase of
the run that led to it (that phase's ``vlxseek_training.json``: command, seed, data checksums,
steps, final loss, machine), and ``SHA256SUMS`` over every shipped file, in ``sha256sum -c``
format. Run paths are written as ``RUN/...`` so that the command reads against any run folder.

    python -m vlxseek_core.training.ship RUN [--final stage2s5] [--dest DIR] [--max-mb 50]

(``--dest`` defaults to the repository's ``models/vlm-fo1-small-scenes``.)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from typing import List, Optional

from ..errors import CheckpointError
from ..models import SMALL_SCENE_MODEL_DIR
from .run import file_sha256

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors",
               "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
               "vlxseek_training.json")
"""What a shipped checkpoint holds (``checkpoint-*`` folders and forming probes stay behind)."""
SUMS = "SHA256SUMS"
FINAL_PHASE = "stage2s5"
"""The recipe's last phase (``scripts/train_small_model.sh`` prints it as its final model)."""


def lineage(final_dir: str) -> List[str]:
    """The phase folders that led to ``final_dir``, first phase first.

    Each trained phase's ``vlxseek_training.json`` names its ``start_model``; the chain ends at a
    folder without one (``make-tiny-model``'s random initialisation, not listed).

    Raises:
        CheckpointError: ``final_dir`` has no ``vlxseek_training.json``, one on the chain names
            no ``start_model``, or the chain loops.
    """
    chain, here = [], os.path.abspath(final_dir)
    while os.path.isfile(info := os.path.join(here, "vlxseek_training.json")):
        if here in chain:
            raise CheckpointError(f"the start_model chain of {final_dir!r} loops at {here!r}")
        chain.append(here)
        try:
            with open(info, encoding="utf-8") as fh:
                here = os.path.abspath(json.load(fh)["start_model"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{info!r} names no start_model ({exc!r})") from exc
    if not chain:
        raise CheckpointError(f"{final_dir!r} is not a trained phase (no vlxseek_training.json)")
    return chain[::-1]


def portable(value, run_dir: str):
    """``value`` (parsed JSON: keys and values) with run paths as ``RUN/...`` and the CLI's file
    as ``vlxseek``."""
    if isinstance(value, dict):
        return {portable(k, run_dir): portable(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, run_dir) for v in value]
    if isinstance(value, str):
        value = value.replace(os.path.abspath(run_dir), "RUN")
        return re.sub(r"(?<!\S)\S*/vlxseek_core/cli\.py(?!\S)", "vlxseek", value)
    return value


def _weights_dtypes(path: str) -> set:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            return {str(fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path!r} is not a readable safetensors file: {exc}") from exc


def ship_scene_model(run_dir: str, dest: str, final: str = FINAL_PHASE,
                     max_mb: float = 50.0) -> List[str]:
    """Copy ``run_dir/final`` into ``dest`` with its training lineage and checksums.

    ``dest`` is replaced as a whole (a stale file from an earlier model must not survive).

    Returns:
        The shipped file names, relative to ``dest``, as listed in ``SHA256SUMS``.

    Raises:
        CheckpointError: the final phase is missing or unfinished, its weights are unreadable
            or not all bfloat16 (``--save-dtype bfloat16``), or ``model.safetensors`` exceeds
            ``max_mb`` megabytes (10^6 bytes; the issue's budget: the vocabulary embedding
            dominates).
    """
    src = os.path.join(run_dir, final)
    missing = [f for f in MODEL_FILES if not os.path.isfile(os.path.join(src, f))]
    if missing:
        raise CheckpointError(f"{src!r} is not a finished phase: {', '.join(missing)} missing")
    weights = os.path.join(src, "model.safetensors")
    dtypes = _weights_dtypes(weights)
    if dtypes != {"BF16"}:
        raise CheckpointError(f"{weights!r} holds {sorted(dtypes)} tensors; ship bfloat16 "
                              "(train the last phase with --save-dtype bfloat16)")
    size_mb = os.path.getsize(weights) / 1e6
    if size_mb > max_mb:
        raise CheckpointError(f"{weights!r} is {size_mb:.1f} MB, over the {max_mb:g} MB budget")
    phases = lineage(src)
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.join(dest, "training"))
    shipped = []
    for name in MODEL_FILES:
        if name == "vlxseek_training.json":
            continue  # written below, portable like the lineage
        shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
        shipped.append(name)
    for i, phase in enumerate(phases):
        with open(os.path.join(phase, "vlxseek_training.json"), encoding="utf-8") as fh:
            info = portable(json.load(fh), run_dir)
        names = [f"training/{i:02d}_{os.path.basename(phase)}.json"]
        if phase == phases[-1]:
            names.append("vlxseek_training.json")
        for name in names:
            with open(os.path.join(dest, name), "w", encoding="utf-8") as fh:
                json.dump(info, fh, indent=2, sort_keys=True)
            shipped.append(name)
    shipped.sort()
    with open(os.path.join(dest, SUMS), "w", encoding="utf-8") as fh:
        fh.writelines(f"{file_sha256(os.path.join(dest, n))}  {n}\n" for n in shipped)
    return shipped


def check_shipped(dest: str) -> None:
    """Verify a shipped checkpoint against its ``SHA256SUMS``.

    Raises:
        CheckpointError: ``SHA256SUMS`` is missing or malformed, a listed file is missing or
            differs, or a model file is not listed.
    """
    sums = os.path.join(dest, SUMS)
    if not os.path.isfile(sums):
        raise CheckpointError(f"{dest!r} has no {SUMS}")
    listed = {}
    with open(sums, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            digest, sep, name = line.rstrip("\n").partition("  ")
            if not sep or len(digest) != 64:
                raise CheckpointError(f"{sums!r} line {number} is not '<sha256>  <file>'")
            listed[name] = digest
    unlisted = [f for f in MODEL_FILES if f not in listed]
    if unlisted:
        raise CheckpointError(f"{SUMS} of {dest!r} does not list {', '.join(unlisted)}")
    for name, digest in listed.items():
        path = os.path.join(dest, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path!r} is listed in {SUMS} but missing")
        if file_sha256(path) != digest:
            raise CheckpointError(f"{path!r} does not match its checksum in {SUMS}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlxseek_core.training.ship",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run folder of scripts/train_small_model.sh")
    parser.add_argument("--final", default=FINAL_PHASE, help="the phase to ship")
    parser.add_argument("--dest", default=SMALL_SCENE_MODEL_DIR)
    parser.add_argument("--max-mb", type=float, default=50.0)
    args = parser.parse_args(argv)
    try:
        for name in ship_scene_model(args.run, args.dest, args.final, args.max_mb):
            print(os.path.join(args.dest, name))
    except CheckpointError as exc:
        parser.exit(2, f"ship: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
