"""Text-region records: a binding curriculum without images (issue 9, vlxseek's stage 0).

Why: a VLM-FO1 prompt lists regions as ``<region0><regionfeat><region1><regionfeat>…``, each
index token *before* its feature row. Detection, REC and counting answers must name the
``<regionK>`` of the row that matches the query: the answer position finds the row by content
and copies the identity of the token before it out of the row (a previous-token head read
through the values, V-composition). A pretrained LLM has such heads; an LLM trained from random
initialisation leaves chance only after a slow, batch-hungry transition
(``benchmarks/probe_lookup.py``, README "Procedural scenes and the scene model"). Forming it
with words in place of the feature rows costs no vision compute and no region features that
must first become distinct, and the short prompt (no system turn, no image tokens) makes the
previous-token head form sooner.

A text-region record is a training record without ``image`` and ``bbox_list``: its
``text_regions`` list stands in for the regions, row ``K`` being the text after ``<regionK>``::

    {"id": "tr:0", "task": "detect", "query": "cat; dog",
     "text_regions": ["dog", "cup", "cat"],
     "conversations": [{"from": "human", "value": "<region0>dog<region1>cup<region2>cat\\n"
                        + TASK_TEXT}, {"from": "gpt", "value": ANSWER}]}

Its prompt is ``<|im_start|>user\\n<region0>dog<region1>cup<region2>cat\\n{task text}
<|im_end|>\\n<|im_start|>assistant\\n``: the inference prompt of the same task with the image
and the system turn left out and each ``<regionfeat>`` row replaced by its text (tokenized on
its own). The task text and the answer are built exactly as for image records.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..answer_format import format_answer
from ..errors import InvalidRequestError
from ..prompts import TASKS, PromptTokenizer, parts_to_text, task_parts
from ..tokens import MAX_REGIONS, region_token
from .record_helpers import check_int, with_article, written_whole
from .records import REGION_REF

TEXT_REGIONS = "text_regions"
"""Record key of the region texts (its presence makes a record a text-region record)."""
TEXT_TASKS = ("detect", "detect_all", "caption", "refer")
"""Tasks :func:`make_text_region_records` writes."""
DEFAULT_WORDS = ("cat", "cup", "rocket", "coin", "bike", "red", "blue", "green", "yellow",
                 "circle", "square", "triangle", "dog", "book", "chair", "apple", "car", "tree",
                 "phone", "lamp", "door", "ball", "box", "key", "cow", "pen", "plate",
                 "clock", "bag", "hat")
"""Region texts of :func:`make_text_region_records`: short English words, one Qwen2 token each
(a multi-token row would need one more hop to gather the row before the lookup)."""


def is_text_region_record(record: Mapping[str, Any]) -> bool:
    """True for a record with ``text_regions`` (no image)."""
    return TEXT_REGIONS in record


def check_text_region_record(record: Mapping[str, Any]) -> Tuple[List[str], list]:
    """Validate a text-region record; returns its region texts and its task text as prompt
    parts (:func:`~vlxseek_core.prompts.task_parts`).

    Raises:
        InvalidRequestError: naming the record id and field: ``image`` or ``bbox_list``
            present, ``text_regions`` not a list of 1..100 non-empty strings without
            ``<``/``>`` (a text must not spell a special token), an unknown task, a
            conversation whose human turn is not the region line + the task text, or an
            answer referring to ``<regionK>`` with ``K >=`` the number of texts.
    """
    rid = record.get("id", "<no id>")

    def error(field: str, why: str) -> InvalidRequestError:
        return InvalidRequestError(f"record {rid!r}: field {field!r}: {why}")

    for key in ("image", "bbox_list"):
        if record.get(key):
            raise error(key, f"a text-region record has no {key} ({TEXT_REGIONS} replaces it)")
    texts = record.get(TEXT_REGIONS)
    if (not isinstance(texts, list) or not 1 <= len(texts) <= MAX_REGIONS
            or not all(_is_region_text(t) for t in texts)):
        raise error(TEXT_REGIONS, f"needs 1 to {MAX_REGIONS} non-empty strings without "
                                  f"'<' or '>', got {texts!r}")
    task = record.get("task")
    if not isinstance(task, str) or task not in TASKS:
        raise error("task", f"unknown task {task!r}")
    conv = record.get("conversations")
    turns = [t.get("value") if isinstance(t, Mapping) else None
             for t in (conv if isinstance(conv, list) else ())]
    parts = task_parts(record["task"], record.get("query", ""),
                       record.get("region_indices") or ())
    expected = region_line_text(texts) + "\n" + parts_to_text(parts)
    if len(turns) != 2 or turns[0] != expected or not isinstance(turns[1], str):
        raise error("conversations", f"needs the human turn {expected!r} and a gpt turn, "
                                     f"got {turns!r}")
    refs = [int(k) for k in REGION_REF.findall(turns[1])]
    if any(k >= len(texts) for k in refs):
        raise error("conversations", f"the answer refers to <region{max(refs)}> but there "
                                     f"are {len(texts)} text regions")
    return texts, parts


def _is_region_text(text) -> bool:
    """A region text: a non-blank string that spells no special token (no ``<`` or ``>``)."""
    return isinstance(text, str) and bool(text.strip()) and "<" not in text and ">" not in text


def region_line_text(texts: Sequence[str]) -> str:
    """``"<region0>text0<region1>text1…"`` (the human turn's first line)."""
    return "".join(f"{region_token(k)}{t}" for k, t in enumerate(texts))


def text_region_prompt_ids(tokenizer: PromptTokenizer, parts: Sequence, texts: Sequence[str]
                           ) -> List[int]:
    """Prompt ids of a text-region record (layout in the module docstring).

    Args:
        tokenizer: the checkpoint's prompt tokenizer.
        parts: the task text as prompt parts (:func:`~vlxseek_core.prompts.task_parts`).
        texts: the region texts; text ``K`` follows ``<regionK>``.
    """
    ids = [tokenizer.im_start] + tokenizer.text_ids("user\n")
    for k, text in enumerate(texts):
        ids += [tokenizer.token_id(region_token(k))] + tokenizer.text_ids(text)
    return ids + tokenizer.text_ids("\n") + tokenizer.build_suffix(parts)


def random_words(n: int, seed: int = 0) -> List[str]:
    """``n`` distinct lowercase words (3-8 letters) that the Qwen2 BPE vocabulary holds as one
    token both bare and with a leading space (``cat``, `` cat``), drawn reproducibly from
    ``seed``. Many words keep a copy from being learnt word by word: with the dozen words of
    the scenes a head per word class forms instead (docs/scene-model-notes.md "The copy into
    <ground> is a colour-word head").

    Raises:
        InvalidRequestError: ``n`` negative or more than the vocabulary holds, a seed that is
            not an integer >= 0.
    """
    import re

    from ..tiny import space_variant_pairs
    from ..tokenizer import build_qwen25_vl_tokenizer

    tokenizer = build_qwen25_vl_tokenizer()
    bare = tokenizer.convert_ids_to_tokens([b for _, b in space_variant_pairs(tokenizer)])
    pool = sorted(w for w in bare if re.fullmatch(r"[a-z]{3,8}", w))
    check_int(n, "random words: n", 0, len(pool))
    rng = np.random.default_rng([check_int(seed, "seed"), 11])
    return [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]


MAX_TEXT_RECORDS = 10**7
"""Most records one call makes: they are held in memory (about 1 KB each) before writing."""


def make_text_region_records(num: int, seed: int = 0, words: Sequence[str] = DEFAULT_WORDS,
                             min_regions: int = 2, max_regions: int = 6,
                             rejection_rate: float = 0.2,
                             tasks: Sequence[str] = ("detect",)) -> List[Dict[str, Any]]:
    """``num`` text-region records (JSON dicts), reproducible from ``seed``.

    Each record draws ``min_regions..max_regions`` distinct ``words`` as its rows and a task
    from ``tasks`` (cycled): ``detect`` names every row's word in a random order (one lookup
    per word, each answered by its own block), plus with probability 0.5 one absent word at a
    random place, answered with the rejection form; with probability ``rejection_rate`` it
    names only 1..3 absent words (a rejection sample). ``detect_all`` asks for every object
    without naming any, answered with every row's block in a random order: each grounded word
    is a choice among the rows not named yet, which trains the answer to attend to the rows
    by content (with the answer loss, this forms the reverse lookup where the region choices
    alone do not: docs/scene-model-notes.md "What forms it"). ``caption`` asks for one row
    (→ "a dog").
    ``refer`` asks for "the <word>" of one row (with probability ``rejection_rate`` an absent
    word, answered with the rejection form): the word after ``<ground>the`` can only be copied
    from the query, whatever it is (scene models learnt that copy for colour words alone:
    docs/scene-model-notes.md "The copy into <ground> is a colour-word head").

    Raises:
        InvalidRequestError: ``num`` outside 0-:data:`MAX_TEXT_RECORDS`, a seed that is not
            an integer >= 0, region counts outside ``1..min(100, len(words) - 1)``
            or inverted, an unknown task, a rate outside [0, 1], ``words`` not distinct
            non-empty strings without ``<``, ``>``, ``;`` or surrounding spaces.
    """
    # beyond what a record allows: no ';' (it separates a detect query's categories) and no
    # surrounding spaces (the answer's phrase would not match the row's tokens)
    if (len(set(words)) != len(words)
            or not all(_is_region_text(w) and w == w.strip() and ";" not in w for w in words)):
        raise InvalidRequestError(f"text regions: words must be distinct non-empty strings "
                                  f"without surrounding spaces, '<', '>' or ';', got {words!r}")
    check_int(num, "num", 0, MAX_TEXT_RECORDS)
    check_int(seed, "seed")
    for value, name in ((min_regions, "min_regions"), (max_regions, "max_regions")):
        check_int(value, name, 1, MAX_REGIONS)
    if not min_regions <= max_regions <= min(MAX_REGIONS, len(words) - 1):
        raise InvalidRequestError(
            f"text regions: need min_regions <= max_regions <= "
            f"{min(MAX_REGIONS, len(words) - 1)} (one word must stay absent)")
    unknown = [t for t in tasks if t not in TEXT_TASKS]
    if unknown or not tasks:
        raise InvalidRequestError(f"text-region tasks are {', '.join(TEXT_TASKS)}: {unknown}")
    if not 0.0 <= rejection_rate <= 1.0:
        raise InvalidRequestError(f"rejection rate must be in [0, 1], got {rejection_rate}")
    rng = np.random.default_rng([int(seed), 7])
    out = []
    for i in range(num):
        n = int(rng.integers(min_regions, max_regions + 1))
        pick = rng.permutation(len(words))
        texts = [words[j] for j in pick[:n]]
        task = tasks[i % len(tasks)]
        regions: List[int] = []
        if task == "detect":
            absent = [words[j] for j in pick[n:]]
            reject = rng.random() < rejection_rate
            if reject:
                names = [absent[j] for j in rng.permutation(len(absent))[:rng.integers(1, 4)]]
            else:
                names = [texts[j] for j in rng.permutation(n)]
                if rng.random() < 0.5:
                    names.insert(int(rng.integers(n + 1)), absent[int(rng.integers(len(absent)))])
            blocks = [(w, [texts.index(w)] if w in texts else []) for w in names]
            query, answer, meta = "; ".join(names), format_answer(blocks), {"rejection": reject}
        elif task == "detect_all":
            blocks = [(texts[j], [int(j)]) for j in rng.permutation(n)]
            query, answer, meta = "", format_answer(blocks), {"rejection": False}
        elif task == "refer":
            reject = rng.random() < rejection_rate
            word = words[int(pick[n + rng.integers(len(words) - n)])] if reject else \
                texts[int(rng.integers(n))]
            query = f"the {word}"
            answer = format_answer([(query, [] if reject else [texts.index(word)])])
            meta = {"rejection": reject}
        else:
            k = int(rng.integers(n))
            query, answer, meta, regions = "", with_article(texts[k]), {}, [k]
        text = parts_to_text(task_parts(task, query, regions))
        record = {"id": f"text-regions:{seed}:{i}", "task": task, "query": query,
                  TEXT_REGIONS: texts,
                  "conversations": [{"from": "human", "value": region_line_text(texts) + "\n"
                                     + text}, {"from": "gpt", "value": answer}],
                  "meta": meta}
        if regions:
            record["region_indices"] = regions
        out.append(record)
    return out


def write_text_region_records(path: str, records: Sequence[Mapping[str, Any]]) -> int:
    """Write records as JSONL, whole or not at all (:func:`~.record_helpers.written_whole`);
    returns how many."""
    with written_whole(path) as part, open(part, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
