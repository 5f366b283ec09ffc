"""benchmarks/probe_lookup.py: pooled rows, same-colour lists, the frozen LLM, weight decay."""
import random

import torch

from benchmarks.lookup_tasks import N_COLOURS, N_SHAPES, REGIONS, WORDS, make_sample, pair_label
from benchmarks.probe_lookup import PooledRows, main

SMALL = ["--batch-size", "4", "--layers", "1", "--hidden", "32", "--heads", "2",
         "--log-every", "1", "--tasks", "detect_all_pair=1"]


def test_pooled_row_is_the_mean_of_its_label_embeddings():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(260, 8)
    rows = PooledRows(embedding)
    words = torch.tensor([WORDS[0], WORDS[7], WORDS[-1]])
    out = rows(words)
    assert out.shape == (3, 8) and out.dtype == torch.float32
    for word, row in zip(words.tolist(), out):
        torch.testing.assert_close(row, embedding(torch.tensor(pair_label(word))).mean(0))
    assert list(rows.parameters()) == []  # the embedding is the LLM's, not the rows' own
    out.sum().backward()  # the LLM's rows of the label tokens train through the rows
    assert embedding.weight.grad[pair_label(WORDS[7])].abs().sum() > 0


def test_same_colour_lists_share_one_colour_and_leave_the_stream_alone():
    rng = random.Random(3)
    for _ in range(30):
        prompt, answer = make_sample("detect_all_pair", rng, 4, 8, 0, same_colour=1.0)
        words = [w for i, w in enumerate(prompt) if w in WORDS and prompt[i - 1] in REGIONS]
        assert 4 <= len(words) <= N_SHAPES and len(set(words)) == len(words)
        assert len({(w - WORDS[0]) % N_COLOURS for w in words}) == 1
    # 0 draws nothing more: the samples of before; other tasks never change
    for task in ("detect_all_pair", "detect_all"):
        a, b = random.Random(5), random.Random(5)
        assert [make_sample(task, a, 2, 8, 0) for _ in range(20)] == \
            [make_sample(task, b, 2, 8, 0, same_colour=0.0 if "pair" in task else 1.0)
             for _ in range(20)]


def test_main_runs_pooled_rows_and_same_colour_lists():
    out = main(["--curriculum", "2-3:2:pooled:4", "--same-colour", "0.5", "--by-length", "3",
                "--by-length-task", "detect_all_pair"] + SMALL)
    assert 0 < out["loss"] < 20 and 0 <= out["first_region_acc_n3"] <= 1


def test_freeze_llm_trains_the_connector_alone(tmp_path):
    first, after = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    small = SMALL + ["--rows", "features"]
    main(["--steps", "1", "--save-state", first] + small)
    main(["--steps", "2", "--load-state", first, "--save-state", after, "--freeze-llm"] + small)
    a, b = torch.load(first), torch.load(after)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not all(torch.equal(a["features"][k], b["features"][k]) for k in a["features"])


def test_weight_decay_shrinks_the_weights(tmp_path):
    """AdamW's decoupled decay: one step at decay 100 (lr 1e-3: a 10 % shrink) leaves a weight
    matrix's norm below that of the same step without decay."""
    plain, decayed = str(tmp_path / "p.pt"), str(tmp_path / "d.pt")
    small = SMALL + ["--rows", "features", "--seed", "2", "--warmup", "1"]
    main(["--steps", "1", "--save-state", plain] + small)
    main(["--steps", "1", "--save-state", decayed, "--weight-decay", "100"] + small)
    key = "model.layers.0.mlp.up_proj.weight"
    p, d = torch.load(plain)["model"][key], torch.load(decayed)["model"][key]
    assert d.norm() < 0.95 * p.norm()
