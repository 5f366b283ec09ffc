"""Benchmarks for model families that are asked with their own task templates (VLX-Seek 1.5).

VLM-FO1's reference evaluation sends each benchmark's stored prompt verbatim (``vqa``, see
:mod:`.common`). VLX-Seek 1.5 releases no evaluation code (spec vlx-seek-1.5 §1.1) and knows only
its templates (§4.2), so a benchmark is mapped onto one of them:

=============================  ===========  ====================================================
protocol                       task         text
=============================  ===========  ====================================================
``coco``                       ``detect``   every category name, ``"; "``-joined (detection)
``countbench``/``pixmo-count``  ``count``    the record's ``category``, else ``X`` of the stored
                                            question ``How many X are there in the image? …``
``refcoco``                    ``refer``    the record's expression (grounding_single), else the
                                            one in its stored REC prompt
=============================  ===========  ====================================================

The answer markup is VLM-FO1's with ``<objK>`` for ``<regionK>`` (§6), so before a protocol reads
an answer its index tokens are respelled ``<regionK>`` (same indices: the pipeline already
returns them in the caller's order); the stored ``answer`` stays as the model wrote it.
"""
from __future__ import annotations

import re
from typing import Tuple

from .common import EvalError, EvalProtocol, require

_COUNT_QUESTION = re.compile(r"^\s*How many (.+?) are there in (?:the|this) image\?", re.S)
_REC_PROMPT = re.compile(r"Please detect (.+) in this image\. Answer the question with object "
                         r"indexes\.", re.S)


def uses_templates(pipeline) -> bool:
    """Whether ``pipeline``'s model family is asked with its templates (not verbatim prompts);
    objects without a ``family`` (test doubles) are VLM-FO1-like."""
    family = getattr(pipeline, "family", None)
    return family is not None and not family.verbatim_eval_prompts


def check_protocol(protocol: EvalProtocol, pipeline) -> None:
    """Refuse a run whose protocol has no template in the pipeline's family.

    Raises:
        EvalError: naming the protocol, the family and what it supports.
    """
    if not uses_templates(pipeline):
        return
    family = pipeline.family
    task = getattr(protocol, "template_task", None)
    if task is None or task not in family.tasks:
        raise EvalError(f"{protocol.name}: no {family.name} task template maps this benchmark "
                        f"(coco → detect, countbench/pixmo-count → count, refcoco → refer; "
                        f"{family.name} supports {', '.join(family.tasks)})")


def template_query(protocol: EvalProtocol, raw: dict) -> Tuple[str, str]:
    """``(task, text)`` of one record for a template-asked family (see the module table).

    Raises:
        ValueError: the record's text cannot be mapped (the record fails, others run on).
    """
    name = protocol.name
    if name == "coco":
        return "detect", "; ".join(protocol.names)
    if protocol.template_task == "count":
        if raw.get("category"):
            return "count", str(raw["category"]).strip()
        question = str(require(raw, "question"))
        match = _COUNT_QUESTION.match(question)
        if not match:
            raise ValueError(f"{name}: the question is not 'How many X are there in the "
                             f"image? …' and the record has no 'category', so it cannot be "
                             f"asked with the counting template: {question[:120]!r}")
        return "count", match.group(1).strip()
    if protocol.template_task == "refer":
        from .refcoco import EXPRESSION_KEYS

        for key in EXPRESSION_KEYS:
            if raw.get(key):
                return "refer", str(raw[key]).strip()
        conversations = raw.get("conversations") or [{}]
        match = _REC_PROMPT.search(str(conversations[0].get("value", "")))
        if not match:
            raise ValueError(f"{name}: no referring expression ({', '.join(EXPRESSION_KEYS)}, "
                             "or a stored REC prompt) to ask the grounding template with")
        return "refer", match.group(1).strip()
    raise EvalError(f"{name}: no task template mapping")


def region_spelling(answer: str, index_tokens) -> str:
    """``answer`` with every ``<{prefix}K>`` of ``index_tokens`` written ``<regionK>``."""
    return index_tokens.pattern.sub(lambda m: f"<region{m.group(1)}>", answer)
