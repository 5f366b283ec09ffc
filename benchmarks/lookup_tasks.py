"""The sandbox's synthetic vocabulary, its samples and its curricula (benchmarks/probe_lookup.py).

Token ids stand in for the FO1 prompt's parts: ``<region0..99>`` are ids 0..99, 30 words are the
rows a list names, fixed filler ids stand in for the system turn and the image tokens, and a few
markup ids for ``<ground>``, ``<objects>``, the task words and the rejection answer (NONE).
``benchmarks/lookup_from_checkpoint.py`` maps these ids onto a real checkpoint's vocabulary.
"""
from __future__ import annotations

import random
from typing import List, Tuple

import torch

REGIONS = list(range(100))  # <region0..99>
WORDS = list(range(100, 130))
GROUND, GROUND_END, OBJECTS, OBJECTS_END, END, DETECT, DETECT_ALL, CAPTION = range(130, 138)
FILLER = list(range(140, 200))  # stands in for the system turn and the image tokens
N_COLOURS = 5  # word w has colour (w - 100) % 5 and shape (w - 100) // 5: two attributes
COLOURS = list(range(200, 200 + N_COLOURS))  # query tokens naming a colour
RECALL, DETECT_COLOUR, ECHO, NONE, DETECT_SHAPE = 205, 206, 207, 208, 209  # NONE: rejection
TASK_TEXT = list(range(210, 240))  # stands in for the fixed task text after the query
N_SHAPES = len(WORDS) // N_COLOURS
SHAPES = list(range(240, 240 + N_SHAPES))  # query tokens naming a shape
VOCAB = 240 + N_SHAPES
ROWS = ("words", "features", "mixed", "pooled")


REGION_IDS = ("ordered", "shuffled", "random")


def make_sample(task: str, rng: random.Random, n_min: int, n_max: int,
                prefix: int, fixed_prefix: bool = False,
                region_ids: str = "ordered", absent: float = 0.0,
                task_text: int = 0, image_tokens: int = 0,
                same_colour: float = 0.0) -> Tuple[List[int], List[int]]:
    """One (prompt ids, answer ids) pair of ``task`` with n_min..n_max regions, after
    ``prefix`` filler tokens: random ones (like image tokens), or with ``fixed_prefix`` the
    same ones in every sample (like a system turn). ``region_ids``: the rows' index tokens are
    ``<region0..n-1>`` in order (FO1 prompts), a permutation of them, or any n of the 100
    (the last two leave no shortcut through a row's ordinal). ``image_tokens`` random filler
    tokens follow the prefix (the image block of a scene prompt). ``detect_all`` only: with
    probability ``absent`` one absent word is named too, answered ``<objects>NONE``, and
    ``task_text`` fixed tokens follow the query (FO1's "… in this image. Answer …").
    ``detect_pair`` and ``detect_all_pair`` name a row by two tokens, its colour then its
    shape (:func:`pair_label`, the scenes' "red" " circle"), where other rows of the list
    may share either one: the conjunction lookup of docs/scene-model-notes.md "Where the
    lookup attends". With probability ``same_colour`` a pair task's rows all share one colour
    (at most ``N_SHAPES`` of them): only the shape then tells the target apart."""
    n = rng.randint(n_min, n_max)
    if task in ("recall", "recall_ground", "detect_colour",
                "detect_colour_short"):  # distinct colours: a colour names one row
        words = [WORDS[0] + rng.randrange(len(WORDS) // N_COLOURS) * N_COLOURS + c
                 for c in rng.sample(range(N_COLOURS), min(n, N_COLOURS))]
        n = len(words)
    elif task == "detect_shape":  # distinct shapes: a shape names one row
        words = [WORDS[0] + s * N_COLOURS + rng.randrange(N_COLOURS)
                 for s in rng.sample(range(N_SHAPES), min(n, N_SHAPES))]
        n = len(words)
    elif same_colour and task.endswith("_pair") and rng.random() < same_colour:
        colour, n = rng.randrange(N_COLOURS), min(n, N_SHAPES)
        words = [WORDS[0] + s * N_COLOURS + colour for s in rng.sample(range(N_SHAPES), n)]
    else:
        words = rng.sample(WORDS, n)
    prompt = (FILLER[:prefix] if fixed_prefix else
              [rng.choice(FILLER) for _ in range(prefix)])
    prompt += [rng.choice(FILLER) for _ in range(image_tokens)]
    ids = {"ordered": lambda: REGIONS[:n], "shuffled": lambda: rng.sample(REGIONS[:n], n),
           "random": lambda: rng.sample(REGIONS, n)}[region_ids]()
    prompt += [t for i, w in enumerate(words) for t in (ids[i], w)]
    order = rng.sample(range(n), n)
    if task == "caption":
        return prompt + [CAPTION], [t for i in order for t in (ids[i], words[i])] + [END]
    label = pair_label if task.endswith("_pair") else (lambda w: [w])
    if task in ("detect", "detect_pair"):
        k = order[0]
        return prompt + [DETECT] + label(words[k]), _block(label(words[k]), ids[k]) + [END]
    if task in ("detect_all", "detect_all_pair"):
        blocks = [(label(words[i]), ids[i]) for i in order]
        if task == "detect_all" and rng.random() < absent:
            missing = rng.choice([w for w in WORDS if w not in words])
            blocks.insert(rng.randint(0, n), ([missing], NONE))
        answer = [t for name, r in blocks for t in _block(name, r)]
        return prompt + [DETECT_ALL] + TASK_TEXT[:task_text], answer + [END]
    if task == "echo":  # one hop: name the token just before the last one (a previous-token
        k = order[0]    # head whose values carry the token; not scored)
        return prompt + [ECHO, ids[k], words[k]], [ids[k], END]
    if task == "detect_many":  # dense lookups: 8 blocks, regions drawn with replacement
        picks = [rng.randrange(n) for _ in range(8)]
        answer = [t for i in picks for t in _block([words[i]], ids[i])]
        return prompt + [DETECT_ALL], answer + [END]
    if task == "detect_shape":  # reverse lookup by the other attribute ("the circle")
        shape = SHAPES[(words[order[0]] - WORDS[0]) // N_COLOURS]
        return (prompt + [DETECT_SHAPE, shape],
                [GROUND, shape, GROUND_END, OBJECTS, ids[order[0]], OBJECTS_END, END])
    colour = COLOURS[(words[order[0]] - WORDS[0]) % N_COLOURS]
    if task == "recall":  # one hop: match the row by an attribute, copy the row itself
        return prompt + [RECALL, colour], [words[order[0]], END]
    if task == "recall_ground":  # the same at <objects>, after the FO1 <ground> block
        return (prompt + [RECALL, colour],
                [GROUND, colour, GROUND_END, OBJECTS, words[order[0]], OBJECTS_END, END])
    if task == "detect_colour_short":  # the same, the region right after the query
        return prompt + [DETECT_COLOUR, colour], [ids[order[0]], END]
    if task == "detect_colour":  # reverse lookup by an attribute ("the red one")
        return (prompt + [DETECT_COLOUR, colour],
                [GROUND, colour, GROUND_END, OBJECTS, ids[order[0]], OBJECTS_END, END])
    raise ValueError(f"unknown task {task!r}")


def _block(label: List[int], region: int) -> List[int]:
    """One answer block: ``<ground>label</ground><objects>region</objects>``."""
    return [GROUND] + label + [GROUND_END, OBJECTS, region, OBJECTS_END]


def pair_label(word: int) -> List[int]:
    """The two-token label of ``word``: ``[its colour's token, its shape's token]``."""
    return [COLOURS[(word - WORDS[0]) % N_COLOURS], SHAPES[(word - WORDS[0]) // N_COLOURS]]


def batch(samples, tasks):
    """Right-padded ids, answer-only labels, attention mask, and which rows answer words."""
    length = max(len(p) + len(a) for p, a in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for row, (prompt, answer) in enumerate(samples):
        seq = prompt + answer
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, len(prompt):len(seq)] = torch.tensor(answer)
        mask[row, :len(seq)] = 1
    is_caption = torch.tensor([t in ("caption", "recall", "recall_ground", "echo")
                               for t in tasks])
    return ids, labels, mask, is_caption


Phase = Tuple[int, int, int, str, int]
"""(min regions, max regions, steps, rows, image tokens) of a curriculum phase."""


def parse_curriculum(specs: List[str], rows: str = "words") -> List[Phase]:
    """``["2-2:800", "2-4:1000:features:16"]`` → ``[(2, 2, 800, rows, 0), (2, 4, 1000,
    "features", 16)]`` (a phase without its own rows: ``rows``; without image tokens: 0).

    Raises:
        ValueError: a phase not written MIN-MAX:STEPS[:ROWS[:IMAGE]] with 1 <= MIN <= MAX,
            STEPS >= 1, ROWS one of words, features, mixed, and IMAGE >= 0.
    """
    phases = []
    for spec in specs:
        try:
            counts, steps, *own = spec.split(":")
            lo, hi = (int(v) for v in counts.split("-"))
            phase = (lo, hi, int(steps), own[0] if own else rows,
                     int(own[1]) if len(own) > 1 else 0)
            if len(own) > 2 or phase[3] not in ROWS or phase[4] < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"curriculum phase {spec!r} is not "
                             f"MIN-MAX:STEPS[:ROWS[:IMAGE]]") from None
        if not (1 <= lo <= hi <= len(WORDS) and phase[2] >= 1):
            raise ValueError(f"curriculum phase {spec!r}: need 1 <= MIN <= MAX <= "
                             f"{len(WORDS)} and STEPS >= 1")
        phases.append(phase)
    return phases


def phase_at_start(phases: List[Phase], step: int) -> bool:
    """Whether 1-based ``step`` is the first step of a curriculum phase."""
    first = 1
    for _, _, steps, _, _ in phases:
        if step == first:
            return True
        first += steps
    return False


def phase_at(phases: List[Phase], step: int) -> Tuple[int, int, str, int]:
    """(min, max) region count, rows and image tokens of 1-based ``step`` in ``phases``."""
    for lo, hi, steps, rows, image in phases:
        if step <= steps:
            return lo, hi, rows, image
        step -= steps
    lo, hi, _, rows, image = phases[-1]
    return lo, hi, rows, image
