"""benchmarks/probe_region_choice.py: teacher-forced region-token accuracy."""
import pytest
import torch
from training_fixtures import patch_oracle_head

from vlxseek_core.training.text_regions import make_text_region_records


def _patch_oracle(model_dir, monkeypatch, edit):
    """Replace the model by an oracle whose output head gives every answer token right, except
    that ``edit(target, at)`` changes record 0's first choice after ``<objects>`` (``target``:
    the oracle's next-token ids ``[B, L]``, ``at``: its position)."""
    from vlxseek_core.tokenizer import load_tokenizer

    objects_id = load_tokenizer(model_dir).convert_tokens_to_ids("<objects>")

    def edit_first_choice(target, labels):  # the first batch holds record 0
        choice = (labels[0, :-1] == objects_id) & (labels[0, 1:] >= 0)
        edit(target, int(choice.nonzero()[0, 0]))

    patch_oracle_head(monkeypatch, edit_first_choice)


def _oracle_scores(model_dir, monkeypatch, records, edit):
    """``score_model`` of the oracle of :func:`_patch_oracle`."""
    from benchmarks import probe_region_choice

    _patch_oracle(model_dir, monkeypatch, edit)
    return probe_region_choice.score_model(model_dir, records, ".", batch_size=4)


def test_scores_are_exact_with_an_oracle_head(train_model_dir, monkeypatch):
    """The oracle is right everywhere but the first choice after ``<objects>`` of record 0
    (the next token id instead): the scores must count exactly."""
    records = make_text_region_records(7, seed=3, max_regions=4)

    def shift(target, at):
        target[0, at] += 1

    out = _oracle_scores(train_model_dir, monkeypatch, records, shift)

    answers = [r["conversations"][1]["value"] for r in records]
    regions = [a.count("<region") for a in answers]
    nones = [a.count("<objects>None") for a in answers]
    flipped_region = answers[0].split("<objects>")[1].startswith("<region")
    with_regions = [r for r, k in zip(records, regions) if k]
    first_miss = 1 if flipped_region and regions[0] else 0
    assert out["first_region_acc"] == pytest.approx(1 - first_miss / len(with_regions))
    assert out["region_acc"] == pytest.approx(1 - first_miss / sum(regions))
    assert sum(nones) > 0
    assert out["rejection_acc"] == pytest.approx(1 - (0 if flipped_region else 1) / sum(nones))
    assert out["false_rejection"] == 0.0  # a wrong region is not a rejection
    assert out["chance"] == pytest.approx(
        sum(1 / len(r["text_regions"]) for r in with_regions) / len(with_regions))
    first_regions = [a.split("<region")[1].split(">")[0] for a in answers if "<region" in a]
    assert out["region0_baseline"] == pytest.approx(
        sum(k == "0" for k in first_regions) / len(first_regions))
    assert 0 < out["region0_baseline"] < 1  # both cases occur, so the test can fail
    assert out["records"] == 7


def test_false_rejection_counts_none_answered_for_a_present_target(train_model_dir,
                                                                   monkeypatch):
    """The oracle answers ``None`` at record 0's first block, whose target is a region: one
    false rejection among all blocks with a region target, and rejection stays exact."""
    from vlxseek_core.tokenizer import load_tokenizer

    none_id = load_tokenizer(train_model_dir).convert_tokens_to_ids("None")
    records = make_text_region_records(12, seed=3, max_regions=4)
    answers = [r["conversations"][1]["value"] for r in records]
    first = next(i for i, a in enumerate(answers) if a.split("<objects>")[1].startswith("<region"))
    records.insert(0, records.pop(first))
    answers.insert(0, answers.pop(first))

    def reject(target, at):
        target[0, at] = none_id

    out = _oracle_scores(train_model_dir, monkeypatch, records, reject)
    region_blocks = sum(a.count("<objects><region") for a in answers)
    assert out["false_rejection"] == pytest.approx(1 / region_blocks)
    assert out["rejection_acc"] == 1.0
    assert out["first_region_acc"] < 1.0


def test_ground_word_scores_count_every_phrase_token(train_model_dir, monkeypatch):
    """The oracle misses record 0's first ``<ground>`` word (and every region choice stays
    right): ``ground_first_acc`` misses one phrase of all, ``ground_acc`` one token of all
    phrase tokens, counted with the real tokenizer."""
    import re

    from benchmarks.probe_region_choice import ground_positions
    from vlxseek_core.tokenizer import load_tokenizer

    tok = load_tokenizer(train_model_dir)
    opening = tok.convert_tokens_to_ids("<ground>")
    words = ("red circle", "cat", "blue cup", "rocket", "astronaut")  # some of several tokens
    records = make_text_region_records(9, seed=4, max_regions=4, tasks=("detect", "detect_all"),
                                       words=words)

    def miss_first_word(target, at):
        first = int((target[0] == opening).nonzero()[0, 0]) + 1
        target[0, first] += 1

    out = _oracle_scores(train_model_dir, monkeypatch, records, miss_first_word)
    phrases = [p for r in records
               for p in re.findall("<ground>(.*?)</ground>", r["conversations"][1]["value"])]
    tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in phrases)
    assert tokens > len(phrases)  # multi-token phrases occur, so the two scores differ
    assert out["ground_first_acc"] == pytest.approx(1 - 1 / len(phrases))
    assert out["ground_acc"] == pytest.approx(1 - 1 / tokens)
    assert out["first_region_acc"] == 1.0

    ids = torch.tensor([-100, opening, 7, 8, opening + 1, 9, opening, 5, opening + 1])
    inside, first = ground_positions(ids, (opening, opening + 1))
    assert inside.tolist() == [False, False, True, True, False, False, False, True, False]
    assert first.tolist() == [False, False, True, False, False, False, False, True, False]


def test_stop_decision_counts_the_token_after_every_objects_block(train_model_dir,
                                                                  monkeypatch):
    """The oracle misses what follows record 0's first ``</objects>`` (another block or the
    end): ``stop_acc`` misses one decision of all ``</objects>`` of the answers, and the region
    choices stay exact."""
    from vlxseek_core.tokenizer import load_tokenizer

    close = load_tokenizer(train_model_dir).convert_tokens_to_ids("</objects>")
    records = make_text_region_records(8, seed=5, min_regions=2, max_regions=4,
                                       tasks=("detect_all",))

    def miss_stop(target, at):
        after = int((target[0, at:] == close).nonzero()[0, 0]) + at + 1
        target[0, after] += 1

    out = _oracle_scores(train_model_dir, monkeypatch, records, miss_stop)
    blocks = sum(r["conversations"][1]["value"].count("</objects>") for r in records)
    assert blocks > len(records)  # several blocks per answer: both decisions occur
    assert out["stop_acc"] == pytest.approx(1 - 1 / blocks)
    assert out["first_region_acc"] == 1.0 and out["region_acc"] == 1.0


def test_by_field_scores_each_group_apart(train_model_dir, tmp_path):
    """``--by task`` adds one row per task; each group's scores equal ``score_model`` on that
    group's records alone, and the groups partition ``all``."""
    import json

    from benchmarks import probe_region_choice

    records = make_text_region_records(8, seed=5, max_regions=3, tasks=("detect", "detect_all"))
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = probe_region_choice.main(["--models", train_model_dir, "--data", str(data),
                                    "--images", ".", "--by", "task"])[train_model_dir]
    tasks = sorted({r["task"] for r in records})
    assert sorted(out) == sorted(["all"] + [f"task={t}" for t in tasks])
    assert sum(out[f"task={t}"]["records"] for t in tasks) == out["all"]["records"] == 8
    detect = [r for r in records if r["task"] == "detect"]
    alone = probe_region_choice.score_model(train_model_dir, detect, ".")
    for key in ("first_region_acc", "region_acc", "chance", "records"):
        assert out["task=detect"][key] == pytest.approx(alone[key], nan_ok=True)


def test_record_group_reads_the_field_then_meta():
    from benchmarks.common import record_group

    assert record_group({"task": "refer", "meta": {"kind": "colour"}}, "task") == "refer"
    assert record_group({"task": "refer", "meta": {"kind": "colour"}}, "kind") == "colour"
    assert record_group({"task": "refer"}, "kind") == "-"
    # regions: the list length, derived from the candidates
    assert record_group({"bbox_list": [[0, 0, 1, 1]] * 3, "task": "refer"}, "regions") == "3"
    assert record_group({"bbox_list": []}, "regions") == "0"
    text = make_text_region_records(1, seed=1, min_regions=3, max_regions=3)[0]
    assert record_group(text, "regions") == "3"  # image-free records: their word regions


def test_formed_exits_3_below_the_lift_and_0_at_it(train_model_dir, monkeypatch, tmp_path,
                                                   capsys):
    """``--formed LIFT``: the oracle misses record 0's first region, so the lift over chance is
    ``(first - chance) / (1 - chance)`` of the scores; a threshold just above it exits with
    ``NOT_FORMED``, one at it returns the scores (the recipe's test of a forming phase)."""
    import json

    from benchmarks import probe_region_choice
    from benchmarks.probe_region_choice import NOT_FORMED, lookup_lift

    records = make_text_region_records(10, seed=6, min_regions=2, max_regions=3,
                                       tasks=("detect_all",))
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))

    def shift(target, at):
        target[0, at] += 1

    args = ["--models", train_model_dir, "--data", str(data), "--images", "."]
    _patch_oracle(train_model_dir, monkeypatch, shift)
    scores = probe_region_choice.main(args)[train_model_dir]["all"]
    chance = sum(1 / len(r["text_regions"]) for r in records) / len(records)
    lift = (0.9 - chance) / (1 - chance)  # 9 of 10 first regions right
    assert scores["first_region_acc"] == pytest.approx(0.9)
    assert lookup_lift(scores) == pytest.approx(lift)
    for threshold, formed in ((lift + 0.01, False), (lift - 0.01, True)):
        if formed:  # each run loads the model anew: the oracle misses record 0 again
            assert probe_region_choice.main(args + ["--formed", str(threshold)])
        else:
            with pytest.raises(SystemExit) as exc:
                probe_region_choice.main(args + ["--formed", str(threshold)])
            assert exc.value.code == NOT_FORMED
        assert ("lookup formed" if formed else "lookup NOT formed") in capsys.readouterr().out
    # nothing to choose (one region per record) is never formed; a model's lift below chance
    # is negative
    assert lookup_lift({"first_region_acc": 1.0, "chance": 1.0}) != 0.0
    assert lookup_lift({"first_region_acc": 0.25, "chance": 0.5}) == pytest.approx(-0.5)
    with pytest.raises(SystemExit) as exc:
        probe_region_choice.main(args + ["--models", train_model_dir, train_model_dir,
                                         "--formed", "0.5"])
    assert exc.value.code == 2


def test_formed_by_regions_needs_every_list_length(train_model_dir, monkeypatch, tmp_path,
                                                   capsys):
    """``--formed LIFT --by regions``: the oracle misses the first region of one 3-row record,
    so the 2-row group is perfect and the 3-row group's lift decides, whatever the average."""
    import json

    from benchmarks import probe_region_choice
    from benchmarks.probe_region_choice import NOT_FORMED, lookup_lift, weakest_lift

    records = (make_text_region_records(4, seed=7, min_regions=2, max_regions=2,
                                        tasks=("detect_all",))
               + make_text_region_records(4, seed=8, min_regions=3, max_regions=3,
                                          tasks=("detect_all",)))
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records[4:] + records[:4]))

    def shift(target, at):
        target[0, at] += 1

    args = ["--models", train_model_dir, "--data", str(data), "--images", ".", "--by",
            "regions"]
    _patch_oracle(train_model_dir, monkeypatch, shift)  # misses record 0: a 3-row one
    scores = probe_region_choice.main(args)[train_model_dir]
    assert scores["regions=2"]["first_region_acc"] == pytest.approx(1.0)
    assert scores["regions=3"]["first_region_acc"] == pytest.approx(0.75)
    three = (0.75 - 1 / 3) / (1 - 1 / 3)
    assert weakest_lift(scores) == pytest.approx(three)
    assert lookup_lift(scores["all"]) > three + 0.1  # the average would pass at three + 0.05
    with pytest.raises(SystemExit) as exc:
        probe_region_choice.main(args + ["--formed", str(three + 0.05)])
    assert exc.value.code == NOT_FORMED
    assert "lookup NOT formed" in capsys.readouterr().out
    assert probe_region_choice.main(args + ["--formed", str(three - 0.01)])
    assert "weakest by regions" in capsys.readouterr().out
    # groups with nothing to choose are left out; without groups, ``all`` decides
    nan_group = {"first_region_acc": 1.0, "chance": 1.0}
    assert weakest_lift({"all": scores["all"], "regions=1": nan_group,
                         "regions=3": scores["regions=3"]}) == pytest.approx(three)
    assert weakest_lift({"all": scores["all"]}) == pytest.approx(lookup_lift(scores["all"]))
    assert weakest_lift({"all": nan_group}) != weakest_lift({"all": nan_group})  # NaN
