"""The loss's vocabulary shortlist (``vlxseek train --loss-vocab data``, issue 9): which rows it
holds, that its loss is the cross-entropy over those rows plus one sampled column for all other
rows, and which rows its gradient reaches. The short training run that answers right through
the full-vocabulary pipeline is in ``test_training_short_run.py``."""
import math

import pytest
import torch
from training_fixtures import IMAGE_SIZES, make_record, write_train_data

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.tokens import IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID
from vlxseek_core.training.model import answer_loss
from vlxseek_core.training.samples import IGNORE_INDEX
from vlxseek_core.training.shortlist import (data_shortlist, off_shortlist_mass,
                                             shortlist_logits, shortlist_targets)
from vlxseek_core.training.text_regions import make_text_region_records


def _records():
    images = [make_record(t, f"img{i % len(IMAGE_SIZES)}.png")
              for i, t in enumerate(("detect", "refer", "count", "caption"))]
    return images + make_text_region_records(6, seed=3, max_regions=4,
                                             tasks=("detect", "detect_all", "caption"))


def test_data_shortlist_holds_every_token_of_the_records_and_the_added_tokens(builder):
    records = _records()
    shortlist = data_shortlist(records, builder, builder.prompt_tokenizer.tokenizer)
    ids = shortlist.tolist()
    assert ids == sorted(set(ids)) and shortlist.dtype == torch.long
    # vocabulary rows only: the placeholders (-200, -300) would index lm_head from its end
    assert ids[0] >= 0
    placeholders = {IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID}
    seen_placeholders = set()
    for record in records:
        record_ids = set(builder.build(record).input_ids.tolist())
        seen_placeholders |= record_ids & placeholders
        assert record_ids - placeholders <= set(ids)
    assert seen_placeholders == placeholders  # the image records do carry both
    added = set(builder.prompt_tokenizer.tokenizer.get_added_vocab().values())
    assert added <= set(ids)
    # the added tokens (stock specials + region tokens + markup) and a few hundred words
    assert len(added) < len(ids) < len(added) + 400
    # the same records twice, or in another order, give the same shortlist
    again = data_shortlist(records[::-1] * 2, builder, builder.prompt_tokenizer.tokenizer)
    assert torch.equal(again, shortlist)


def _head(vocab=3000, hidden=16, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    torch.nn.init.normal_(head.weight, std=0.3)
    return head


def test_shortlist_of_every_row_is_the_full_loss():
    head = _head()
    hidden = torch.randn(2, 7, 16)
    labels = torch.full((2, 7), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([5, 17, 2999, 40])
    labels[1, 5:] = torch.tensor([8, 1200])
    full = answer_loss(head, hidden, labels)
    every = answer_loss(head, hidden, labels, torch.arange(3000))
    torch.testing.assert_close(every["loss"], full["loss"])
    assert int(every["num_answer_tokens"]) == 6


def test_shortlist_loss_is_cross_entropy_over_its_rows_and_a_sampled_rest():
    head = _head()
    rows = torch.randn(5, 16)
    shortlist = torch.tensor([3, 7, 100, 555, 1024, 2047])
    with torch.no_grad():
        plain = shortlist_logits(head, rows, shortlist, negatives=0)
        torch.testing.assert_close(plain, head(rows)[:, shortlist])
    torch.manual_seed(1)
    with torch.no_grad():
        with_rest = shortlist_logits(head, rows, shortlist, negatives=64)
    assert with_rest.shape == (5, 7)
    torch.testing.assert_close(with_rest[:, :6], plain)
    # the last column estimates the log-sum-exp of the other 2994 rows
    off = torch.ones(3000, dtype=torch.bool)
    off[shortlist] = False
    with torch.no_grad():
        truth = torch.logsumexp(head(rows)[:, off], dim=-1)
        torch.manual_seed(2)
        many = shortlist_logits(head, rows, shortlist, negatives=200_000)[:, -1]
    torch.testing.assert_close(many, truth, atol=0.02, rtol=0)
    assert float((with_rest[:, -1] - truth).abs().max()) < 0.5  # 64 draws: a rough estimate


def test_gradient_reaches_the_shortlist_and_the_drawn_rows_only():
    head = _head()
    shortlist = torch.tensor([10, 11, 12, 13])
    hidden = torch.randn(1, 4, 16)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 12, 10]])
    torch.manual_seed(0)
    answer_loss(head, hidden, labels, shortlist)["loss"].backward()
    touched = set(head.weight.grad.abs().sum(dim=1).nonzero()[:, 0].tolist())
    assert set(shortlist.tolist()) <= touched
    drawn = touched - set(shortlist.tolist())
    assert 0 < len(drawn) <= 4096 and len(drawn) < 2996
    head.weight.grad = None
    logits = shortlist_logits(head, hidden[0, 1:3], shortlist, negatives=0)
    torch.nn.functional.cross_entropy(logits, shortlist_targets(shortlist, torch.tensor(
        [12, 10]))).backward()
    assert set(head.weight.grad.abs().sum(dim=1).nonzero()[:, 0].tolist()) == {10, 11, 12, 13}


def test_without_negatives_the_loss_is_cross_entropy_over_the_shortlist_alone():
    """``vlxseek train --loss-negatives 0``: no column for the rows off the shortlist, so
    neither they nor a random draw touch the loss or its gradient."""
    head = _head()
    shortlist = torch.tensor([10, 11, 12, 13, 400])
    hidden = torch.randn(2, 4, 16)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 12, 10],
                           [IGNORE_INDEX, 400, IGNORE_INDEX, IGNORE_INDEX]])
    torch.manual_seed(0)
    first = answer_loss(head, hidden, labels, shortlist, negatives=0)["loss"]
    torch.manual_seed(1)
    again = answer_loss(head, hidden, labels, shortlist, negatives=0)["loss"]
    assert first.item() == again.item()  # nothing drawn at random
    with torch.no_grad():
        logits = head.weight[shortlist] @ hidden[:, :-1].reshape(-1, 16).T
    ce = torch.nn.functional.cross_entropy
    per_row = ce(logits.T.reshape(2, 3, 5)[0, 1:], torch.tensor([2, 0]))
    per_sample = torch.stack([per_row, ce(logits.T.reshape(2, 3, 5)[1, :1], torch.tensor([4]))])
    torch.testing.assert_close(first, per_sample.mean())
    first.backward()
    touched = set(head.weight.grad.abs().sum(dim=1).nonzero()[:, 0].tolist())
    assert touched == set(shortlist.tolist())
    with_column = answer_loss(head, hidden, labels, shortlist)["loss"]
    assert with_column.item() > first.item() + 1.0  # ~2,995 random rows share the softmax


@pytest.mark.parametrize("extra, message", [
    (["--loss-negatives", "0"], "--loss-negatives N (N >= 0) goes with --loss-vocab data"),
    (["--loss-vocab", "data", "--loss-negatives", "-1"],
     "argument --loss-negatives: must be in [0, inf), got '-1'")])
def test_cli_refuses_negatives_without_a_shortlist(extra, message, train_model_dir, images_dir,
                                                   tmp_path, capsys):
    from vlxseek_core.cli import main

    data = write_train_data(tmp_path / "train.jsonl", 2)
    code = main(["train", "--stage", "0", "--model", train_model_dir, "--data", data,
                 "--images", images_dir, "--out", str(tmp_path / "out"), *extra])
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_answer_token_off_the_shortlist_is_refused():
    head = _head()
    labels = torch.tensor([[IGNORE_INDEX, 5, 6]])
    with pytest.raises(InvalidRequestError, match=r"\[6\] are not in the loss's vocabulary"):
        answer_loss(head, torch.randn(1, 3, 16), labels, torch.tensor([5, 7]))
    assert shortlist_targets(torch.tensor([5, 7, 9]), torch.tensor([9, 5])).tolist() == [2, 0]


def test_off_shortlist_mass():
    head = _head()
    rows = torch.randn(4, 16)
    mean, worst = off_shortlist_mass(head, rows, torch.arange(3000))
    assert mean == pytest.approx(0.0, abs=1e-6) and worst == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        head.weight[100:] = 0.0
        head.weight[:100] *= 100.0  # every position's argmax far above the zeroed rows
    mean, worst = off_shortlist_mass(head, rows, torch.arange(100))
    assert 0.0 <= mean <= worst < 1e-3
    mean, _ = off_shortlist_mass(_head(), rows, torch.tensor([0]))
    assert mean > 0.9  # one row of 3000 keeps little


@pytest.mark.parametrize("extra", [["--deepspeed", "zero2.json"], ["--fsdp", "full_shard"]])
def test_cli_refuses_the_shortlist_with_sharded_parameters(extra, train_model_dir, images_dir,
                                                           tmp_path, capsys):
    from vlxseek_core.cli import main

    data = write_train_data(tmp_path / "train.jsonl", 2)
    code = main(["train", "--stage", "0", "--model", train_model_dir, "--data", data,
                 "--images", images_dir, "--out", str(tmp_path / "out"),
                 "--loss-vocab", "data", *extra])
    assert code != 0
    assert "--loss-vocab data reads lm_head's rows directly" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_log_of_the_sampled_column_uses_the_off_shortlist_count():
    """With every off-shortlist row equal, the column is exact whatever rows are drawn:
    ``log(N_off) + logit``."""
    head = torch.nn.Linear(4, 1000, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, 0] = 1.0
        head.weight[:10, 0] = torch.arange(10.0)
    rows = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        out = shortlist_logits(head, rows, torch.arange(10), negatives=7)
    assert float(out[0, -1]) == pytest.approx(math.log(990) + 2.0, abs=1e-5)
