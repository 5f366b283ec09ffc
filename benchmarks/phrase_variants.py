"""Held-out records with the query's phrasing edited: which tokens does the lookup key on?

A model trained on ``detect`` / ``detect_all`` labels ("red circle") may answer "the red
circle" at chance. The byte-level BPE writes the colour word of the two differently: ``red``
right after ``<ground>``, `` red`` (a leading space, another token) after ``the``. This tool
takes held-out ``make-scenes`` records and writes variants that separate the prompt from the
``<ground>`` text, and a token's identity from its position (docs/scene-model-notes.md "The
lookup keys on the bare token"); ``benchmarks/probe_region_choice.py`` then scores each file:

* ``refer_P_G.jsonl`` (``P``, ``G`` in ``the`` / ``bare``): ``refer`` records of kind
  ``category`` ("the red circle"), with the article kept or dropped in the prompt query (P)
  and in the ``<ground>`` text (G);
* ``refer_space.jsonl``: bare prompt, ``<ground> red circle``: the spaced token where the bare
  one sits;
* ``refer_star.jsonl``: bare prompt, ``<ground>*red circle``: the bare token one position
  later (only records whose words then tokenize as in the bare form, which needs
  ``--model`` for the tokenizer);
* ``detect_all_bare.jsonl`` / ``detect_all_the.jsonl``: ``detect_all`` records as written /
  with every label "the <label>";
* ``detect_single.jsonl``: one ``detect`` record per object of each ``detect_all`` record,
  naming its bare label alone (``meta.label``, ``meta.heldout_phrase``): ``probe_region_choice
  --by label`` then scores every category apart, held-out colour–shape combinations included.

``--share-rows OUT_CKPT`` (with ``--model``) also writes a copy of the checkpoint in which the
embedding row of each scene word's spaced token (`` red``) is that of its bare token (``red``),
as a pretrained LLM would have them close: if the lookup keys on the token's embedding, the
copy answers "the red circle" as the model answers "red circle", without training.

    python -m benchmarks.phrase_variants heldout.jsonl OUT_DIR [--model CKPT] [--limit 300]
    python -m benchmarks.probe_region_choice --models CKPT --data OUT_DIR/refer_the_bare.jsonl \\
        --images IMAGES_DIR
    python -m benchmarks.phrase_variants heldout.jsonl OUT_DIR --model CKPT --share-rows SHARED
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Callable, Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GROUND, END = "<ground>", "</ground>"


def _edited(record: dict, prompt: str, ground: str) -> dict:
    """A copy of a one-block record whose prompt query reads ``prompt`` and whose
    ``<ground>`` text reads ``ground``."""
    out = copy.deepcopy(record)
    human, gpt = out["conversations"][0], out["conversations"][1]
    query = record["query"]
    old_ground = f"{GROUND}{query}{END}"
    if f" {query} " not in human["value"] or old_ground not in gpt["value"]:
        raise ValueError(f"record {record.get('id')!r} does not name {query!r} as expected")
    human["value"] = human["value"].replace(f" {query} ", f" {prompt} ", 1)
    gpt["value"] = gpt["value"].replace(old_ground, f"{GROUND}{ground}{END}", 1)
    return out


def variants(records: List[dict], keeps_bare_token: Optional[Callable[[str], bool]] = None
             ) -> Dict[str, List[dict]]:
    """The variant files of the module doc, as ``{name: records}``.

    ``records``: held-out ``make-scenes`` records (JSON dicts). ``keeps_bare_token(phrase)``:
    whether ``*`` + phrase tokenizes as ``*`` then the bare phrase's tokens; without it there
    is no ``refer_star`` variant.

    Raises:
        ValueError: a ``refer`` record of kind ``category`` whose query is not "the …" or is
            not written in its prompt and ``<ground>`` text.
    """
    refer = [r for r in records if r.get("task") == "refer"
             and (r.get("meta") or {}).get("kind") == "category"]
    out: Dict[str, List[dict]] = {}
    for prompt_form in ("the", "bare"):
        for ground_form in ("the", "bare"):
            out[f"refer_{prompt_form}_{ground_form}"] = [
                _edited(r, _form(r["query"], prompt_form), _form(r["query"], ground_form))
                for r in refer]
    out["refer_space"] = [_edited(r, _bare(r["query"]), " " + _bare(r["query"]))
                          for r in refer]
    if keeps_bare_token is not None:
        out["refer_star"] = [_edited(r, _bare(r["query"]), "*" + _bare(r["query"]))
                             for r in refer if keeps_bare_token(_bare(r["query"]))]
    detect_all = [r for r in records if r.get("task") == "detect_all"]
    out["detect_all_bare"] = copy.deepcopy(detect_all)
    out["detect_all_the"] = copy.deepcopy(detect_all)
    for r in out["detect_all_the"]:
        gpt = r["conversations"][1]
        gpt["value"] = gpt["value"].replace(GROUND, GROUND + "the ")
    out["detect_single"] = [single for r in detect_all for single in _single_labels(r)]
    return out


def _single_labels(record: dict) -> List[dict]:
    """One single-label ``detect`` record (built as ``make-scenes`` builds one) per grounded
    block of the ``detect_all`` ``record``, its label without an article."""
    from vlxseek_core.answer_format import format_answer
    from vlxseek_core.parsing import parse_answer
    from vlxseek_core.training.records import TrainingRecord
    from vlxseek_core.training.scenes import is_heldout_phrase

    parsed = parse_answer(record["conversations"][1]["value"], len(record["bbox_list"]))
    out = []
    for grounding in parsed.groundings:
        label = grounding.phrase[len("the "):] if grounding.phrase.startswith("the ") \
            else grounding.phrase
        out.append(TrainingRecord(
            id=f"{record['id']}:{label}", image=record["image"], task="detect", query=label,
            answer=format_answer([(label, grounding.region_indices)]),
            bbox_list=record["bbox_list"],
            meta={"label": label, "heldout_phrase": is_heldout_phrase(label)}).to_json())
    return out


def share_word_rows(model_dir: str, out_dir: str, words: Optional[List[str]] = None,
                    tokenizer=None) -> List[str]:
    """Copy the checkpoint ``model_dir`` to ``out_dir`` with, for each word of ``words``
    (default ``SCENE_WORDS`` of ``make-scenes``) that is one token both bare and with a leading
    space, the spaced token's row of the input embedding (and of an untied ``lm_head``) set to
    the bare token's row. ``tokenizer``: that of ``model_dir``, if the caller has it loaded
    already.
    Returns the words whose rows were shared.

    Raises:
        ValueError: ``model_dir`` has no ``model.safetensors`` with an ``embed_tokens``
            weight, or ``out_dir`` exists.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from vlxseek_core.tiny import relate_space_variants, word_pairs
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.scenes import SCENE_WORDS

    weights = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError(f"{model_dir} has no model.safetensors")
    if os.path.exists(out_dir):
        raise ValueError(f"{out_dir} exists; give a new directory")
    state = load_file(weights)
    keys = [k for k in state if k.endswith(("embed_tokens.weight", "lm_head.weight"))]
    if not any(k.endswith("embed_tokens.weight") for k in keys):
        raise ValueError(f"{weights} has no embed_tokens weight")
    tok = tokenizer or load_tokenizer(model_dir)
    pairs, shared = word_pairs(tok, words or SCENE_WORDS)
    for key in keys:
        relate_space_variants(state[key], pairs, 1.0)
    shutil.copytree(model_dir, out_dir)
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return shared


def _bare(query: str) -> str:
    if not query.startswith("the "):
        raise ValueError(f"a category expression starts with 'the ': {query!r}")
    return query[len("the "):]


def _form(query: str, form: str) -> str:
    return query if form == "the" else _bare(query)


def main(argv: Optional[List[str]] = None) -> Dict[str, int]:
    """Write the variant files; returns ``{name: records written}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="held-out make-scenes records (JSONL)")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--model", help="checkpoint whose tokenizer decides refer_star")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N records per variant file")
    parser.add_argument("--share-rows", metavar="OUT_CKPT",
                        help="also write a copy of --model whose spaced scene words share the "
                             "bare words' embedding rows")
    args = parser.parse_args(argv)
    if args.share_rows and not args.model:
        parser.error("--share-rows needs --model")
    from vlxseek_core.training.run import read_jsonl

    records = read_jsonl(args.data)
    keeps, tok = None, None
    if args.model:
        from vlxseek_core.tokenizer import load_tokenizer

        tok = load_tokenizer(args.model)

        def star_keeps_bare(phrase: str) -> bool:
            bare = tok(GROUND + phrase)["input_ids"]
            star = tok(GROUND + "*" + phrase)["input_ids"]
            return star[2:] == bare[1:]

        keeps = star_keeps_bare

    os.makedirs(args.out, exist_ok=True)
    written = {}
    for name, recs in variants(records, keeps).items():
        recs = recs[: args.limit]
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in recs)
        written[name] = len(recs)
    if args.share_rows:
        written["shared_words"] = len(share_word_rows(args.model, args.share_rows,
                                                      tokenizer=tok))
    print(json.dumps(written))
    return written


if __name__ == "__main__":
    main()
