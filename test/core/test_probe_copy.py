"""benchmarks/probe_copy.py: the copy of the query into <ground>, per word and per head."""
import pytest
import torch
from training_fixtures import patch_oracle_head

from vlxseek_core.training.text_regions import make_text_region_records


def test_every_copyable_position_is_found_and_scored(train_model_dir):
    """Text-region refer records: `<ground>the cow` copies ` cow` from the query, the one
    copyable position of each record (the bare `the` is not in the prompt)."""
    from benchmarks import probe_copy

    records = make_text_region_records(6, seed=4, tasks=("refer",), max_regions=3)
    hits = probe_copy.copy_hits(train_model_dir, records, ".")
    assert [h["word"] for h in hits] == [" " + r["query"][len("the "):] for r in records]
    for hit in hits:
        assert hit["attention"].shape == (2, 4)  # the tiny LLM: 2 layers of 4 heads
        assert bool(((hit["attention"] >= 0) & (hit["attention"] <= 1 + 1e-5)).all())
        assert isinstance(hit["right"], bool)


def test_an_oracle_head_copies_every_word(train_model_dir, monkeypatch):
    from benchmarks import probe_copy

    patch_oracle_head(monkeypatch)
    records = make_text_region_records(5, seed=1, tasks=("refer",), max_regions=3)
    summary = probe_copy.summarise(probe_copy.copy_hits(train_model_dir, records, "."))
    assert summary["all"]["n"] == 5 and summary["all"]["copy_acc"] == 1.0
    assert summary["all"]["attention_wrong"] is None
    assert probe_copy.copy_head(summary) is None  # no wrong copy: no contrast


def test_summary_and_copy_head_on_known_hits():
    from benchmarks import probe_copy

    def att(layer, head, value):
        a = torch.zeros(2, 3)
        a[layer, head] = value
        return a

    hits = [{"word": " red", "right": True, "attention": att(1, 2, 0.9)},
            {"word": " red", "right": True, "attention": att(1, 2, 0.7)},
            {"word": " cat", "right": False, "attention": att(0, 0, 0.4)}]
    s = probe_copy.summarise(hits)
    assert s["all"]["n"] == 3 and s["all"]["copy_acc"] == pytest.approx(2 / 3)
    assert s[" red"]["copy_acc"] == 1.0 and s[" cat"]["copy_acc"] == 0.0
    assert float(s[" red"]["attention_right"][1, 2]) == pytest.approx(0.8)
    assert s[" red"]["attention_wrong"] is None
    assert probe_copy.copy_head(s) == (1, 2)  # on the target when right, off it when wrong
    assert probe_copy.best_head(s[" red"]["attention_right"]) == "L1H2 0.80"
    assert probe_copy.best_head(None) == "—"
