"""benchmarks/probe_lookup.py: the synthetic region-lookup probe of issue 9."""
import math
import random

import torch

from benchmarks.probe_lookup import (GROUND, OBJECTS, REGIONS, WORDS, accuracies, batch,
                                     main, make_sample)


def _pairs(prompt):
    """word -> region index of the prompt's region list."""
    return {w: prompt[i - 1] for i, w in enumerate(prompt)
            if w in WORDS and prompt[i - 1] in REGIONS}


def test_detect_answer_names_the_region_of_the_queried_word():
    rng = random.Random(3)
    for _ in range(50):
        prompt, answer = make_sample("detect", rng, 2, 8, prefix=5)
        word = prompt[-1]
        assert answer[:2] == [GROUND, word] and answer[3] == OBJECTS
        assert answer[4] == _pairs(prompt)[word]


def test_detect_all_and_caption_cover_every_region_once():
    rng = random.Random(4)
    for task, step, region_at, word_at in (("detect_all", 6, 4, 1), ("caption", 2, 0, 1)):
        prompt, answer = make_sample(task, rng, 3, 6, prefix=0)
        pairs = _pairs(prompt)
        body = answer[:-1]
        regions = body[region_at::step]
        words = body[word_at::step]
        assert sorted(regions) == sorted(pairs.values())
        assert [pairs[w] for w in words] == regions


def test_first_region_accuracy_ignores_later_regions_and_captions():
    samples = [([0, WORDS[0], 1, WORDS[1]], [GROUND, WORDS[1], 131, OBJECTS, 1, 133, 0, 133])]
    ids, labels, mask, is_caption = batch(samples, ["detect_all"])
    logits = torch.zeros(1, ids.shape[1], 200)
    answer_start = 4
    # right first region (position of the label 1 is answer_start + 4), wrong second one
    logits[0, answer_start + 4 - 1, 1] = 1.0
    logits[0, answer_start + 6 - 1, 5] = 1.0
    acc = accuracies(logits, labels, is_caption)
    assert acc["first_region_acc"] == 1.0 and acc["region_acc"] == 0.5
    assert math.isnan(acc["caption_word_acc"])


def test_main_runs_and_reports():
    out = main(["--steps", "3", "--batch-size", "4", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--log-every", "3", "--tasks", "caption=1", "detect_all=1"])
    assert set(out) == {"first_region_acc", "region_acc", "caption_word_acc", "loss"}
    assert 0 < out["loss"] < 20


def test_prefix_is_random_or_fixed():
    rng = random.Random(5)
    random_prefixes = {tuple(make_sample("detect", rng, 2, 3, prefix=6)[0][:6]) for _ in range(5)}
    fixed = {tuple(make_sample("detect", rng, 2, 3, prefix=6, fixed_prefix=True)[0][:6])
             for _ in range(5)}
    assert len(random_prefixes) > 1 and len(fixed) == 1
    prompt, _ = make_sample("detect", rng, 2, 3, prefix=0)
    assert prompt[0] == REGIONS[0]
