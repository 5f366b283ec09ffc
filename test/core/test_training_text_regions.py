"""Text-region records (issue 9's image-free binding curriculum) and ``--loss-on regions``."""
import json
import os

import pytest
import torch
from training_fixtures import make_record

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.parsing import parse_answer
from vlxseek_core.training.samples import IGNORE_INDEX, SampleBuilder, collate_samples
from vlxseek_core.training.text_regions import (DEFAULT_WORDS, make_text_region_records,
                                                region_line_text)


def _record(texts=("dog", "cup", "cat"), query="cat; dog", answer=None, **extra):
    answer = answer or "<ground>cat</ground><objects><region2></objects>" \
                       "<ground>dog</ground><objects><region0></objects>"
    rec = {"id": "t0", "task": "detect", "query": query, "text_regions": list(texts),
           "conversations": [
               {"from": "human", "value": region_line_text(texts) + "\nPlease detect "
                f"{query} in this image. Answer the question with object indexes."},
               {"from": "gpt", "value": answer}]}
    rec.update(extra)
    return rec


@pytest.fixture(scope="module")
def region_builder(builder):
    return SampleBuilder(builder.prompt_tokenizer.tokenizer, builder.preprocessor,
                         builder.images_dir, loss_on="regions")


def test_records_are_reproducible_and_their_answers_name_the_right_rows():
    records = make_text_region_records(300, seed=5, tasks=("detect", "caption"))
    assert records == make_text_region_records(300, seed=5, tasks=("detect", "caption"))
    assert records != make_text_region_records(300, seed=6, tasks=("detect", "caption"))
    rejections = 0
    for r in records:
        texts = r["text_regions"]
        assert 2 <= len(texts) <= 6 and len(set(texts)) == len(texts)
        answer = r["conversations"][1]["value"]
        if r["task"] == "caption":
            (k,) = r["region_indices"]
            assert answer in (f"a {texts[k]}", f"an {texts[k]}")
            continue
        parsed = parse_answer(answer, len(texts))
        named = r["query"].split("; ")
        # every present word → its own row, in the query's order; every absent one → None
        assert [g.phrase for g in parsed.groundings] == [w for w in named if w in texts]
        assert all([texts[i] for i in g.region_indices] == [g.phrase]
                   for g in parsed.groundings)
        assert parsed.rejected == [w for w in named if w not in texts]
        assert not parsed.malformed
        if r["meta"]["rejection"]:
            rejections += 1
            assert not any(w in texts for w in named)
        else:
            assert set(texts) <= set(named)  # every row is looked up
    assert 0.1 < rejections / 150 < 0.3


def test_detect_all_names_every_row_once_in_varied_orders(builder):
    records = make_text_region_records(60, seed=2, tasks=("detect_all",), min_regions=3,
                                       max_regions=3)
    firsts = set()
    for r in records:
        texts = r["text_regions"]
        assert r["query"] == "" and r["meta"] == {"rejection": False}
        assert r["conversations"][0]["value"].endswith(
            "Please identify every object in the image and provide their labels along with "
            "their indexes.")
        parsed = parse_answer(r["conversations"][1]["value"], len(texts))
        assert sorted(g.phrase for g in parsed.groundings) == sorted(texts)
        assert all([texts[i] for i in g.region_indices] == [g.phrase]
                   for g in parsed.groundings)
        assert not parsed.rejected and not parsed.malformed
        firsts.add(parsed.groundings[0].region_indices[0])
        builder.build(r)  # valid: the prompt checks pass
    assert firsts == {0, 1, 2}  # a random order, not the rows' order


def test_refer_asks_for_the_word_of_one_row_or_an_absent_one(builder):
    """`refer` records: "the <word>" of one row (its region) or of an absent word (the
    rejection form), with the prompt of an image refer record."""
    records = make_text_region_records(200, seed=3, tasks=("refer",), max_regions=4)
    rejections, words = 0, set()
    for r in records:
        texts, query = r["text_regions"], r["query"]
        assert query.startswith("the ") and r["task"] == "refer"
        word = query[len("the "):]
        words.add(word)
        assert r["conversations"][0]["value"] == (
            f"{region_line_text(texts)}\nPlease detect {query} in this image. Answer the "
            "question with object indexes.")
        parsed = parse_answer(r["conversations"][1]["value"], len(texts))
        assert not parsed.malformed
        if r["meta"]["rejection"]:
            rejections += 1
            assert word not in texts and parsed.rejected == [query] and not parsed.groundings
        else:
            (g,) = parsed.groundings
            assert g.phrase == query and [texts[i] for i in g.region_indices] == [word]
        builder.build(r)  # valid: the prompt checks pass
    assert 0.1 < rejections / len(records) < 0.3
    assert len(words) > 20  # any word, so that no word-specific head can do the copy


@pytest.mark.parametrize("kwargs", [dict(num=-1), dict(min_regions=0), dict(min_regions=5,
                                    max_regions=4), dict(max_regions=len(DEFAULT_WORDS)),
                                    dict(tasks=("count",)), dict(tasks=()),
                                    dict(rejection_rate=1.5), dict(words=("cat", "cat", "dog")),
                                    dict(words=("cat", "", "dog")),
                                    dict(words=("cat", "a <b>", "dog")),
                                    dict(words=("cat", "dog; cup", "dog")),
                                    dict(words=("cat", " dog", "cup"))])
def test_bad_generator_arguments_are_refused(kwargs):
    with pytest.raises(InvalidRequestError):
        make_text_region_records(**{"num": 3, **kwargs})


def test_default_words_are_one_token_each(builder):
    tok = builder.prompt_tokenizer
    assert [w for w in DEFAULT_WORDS if len(tok.text_ids(w)) != 1] == []


def test_sample_layout_and_answer_only_labels(builder):
    tok = builder.prompt_tokenizer.tokenizer
    sample = builder.build(_record())
    assert sample.image is None
    text = tok.decode(sample.input_ids)
    assert text.startswith("<|im_start|>user\n<region0>dog<region1>cup<region2>cat\nPlease "
                           "detect cat; dog in this image.")
    assert "<|vision_start|>" not in text and "system" not in text
    assert (sample.input_ids < 0).sum() == 0  # no image / region-feature placeholders
    labelled = sample.labels[sample.labels != IGNORE_INDEX]
    assert tok.decode(labelled) == ("<ground>cat</ground><objects><region2></objects><ground>"
                                    "dog</ground><objects><region0></objects><|im_end|>")
    assert (sample.labels[: len(sample.labels) - len(labelled)] == IGNORE_INDEX).all()


@pytest.mark.parametrize("change, field", [
    (dict(image="img0.png"), "image"),
    (dict(bbox_list=[[0, 0, 5, 5]]), "bbox_list"),
    (dict(text_regions=[]), "text_regions"),
    (dict(text_regions=["a<region1>"]), "text_regions"),
    (dict(text_regions=["dog", 3]), "text_regions"),
    (dict(task="segment"), "task"),
])
def test_bad_text_region_records_are_refused(builder, change, field):
    with pytest.raises(InvalidRequestError, match=field):
        builder.build(_record(**change))


def test_human_turn_and_answer_must_match_the_rows(builder):
    bad_turn = _record()
    bad_turn["conversations"][0]["value"] = "<region0>dog\nPlease detect cat; dog"
    with pytest.raises(InvalidRequestError, match="human turn"):
        builder.build(bad_turn)
    three_turns = _record()
    three_turns["conversations"].append({"from": "human", "value": "and the cup?"})
    with pytest.raises(InvalidRequestError, match="a gpt turn"):
        builder.build(three_turns)
    with pytest.raises(InvalidRequestError, match="<region5>"):
        builder.build(_record(answer="<ground>cat</ground><objects><region5></objects>"))


def test_loss_on_regions_keeps_only_region_choices(region_builder):
    tok = region_builder.prompt_tokenizer.tokenizer
    answer = ("<ground>cat</ground><objects><region2></objects><ground>None</ground>"
              "<objects>None</objects>")
    sample = region_builder.build(_record(query="cat; None", answer=answer))
    kept = sample.labels[sample.labels != IGNORE_INDEX].tolist()
    # "None" as a label inside <ground> is not a choice; the one after <objects> is
    assert tok.convert_ids_to_tokens(kept) == ["<region2>", "None"]
    image = region_builder.build(make_record("count"))
    assert tok.convert_ids_to_tokens(image.labels[image.labels != IGNORE_INDEX].tolist()) == [
        "<region0>", "<region2>"]
    with pytest.raises(InvalidRequestError, match="region choice"):
        region_builder.build(make_record("caption"))
    with pytest.raises(InvalidRequestError, match="loss_on"):
        SampleBuilder(tok, region_builder.preprocessor, ".", loss_on="everything")


def test_loss_on_choices_adds_the_grounded_phrases(region_builder):
    tok = region_builder.prompt_tokenizer.tokenizer
    builder = SampleBuilder(tok, region_builder.preprocessor, region_builder.images_dir,
                            loss_on="choices")
    answer = ("<ground>cat</ground><objects><region2></objects><ground>None</ground>"
              "<objects>None</objects>")
    sample = builder.build(_record(query="cat; None", answer=answer))
    kept = sample.labels[sample.labels != IGNORE_INDEX].tolist()
    # phrases (here one token each, the second spelled "None") and the choices; no markup
    assert tok.convert_ids_to_tokens(kept) == ["cat", "<region2>", "None", "None"]
    labels = sample.labels.tolist()
    assert all(lab in (IGNORE_INDEX, tid) for lab, tid in zip(labels, sample.input_ids.tolist()))
    image = builder.build(make_record("count"))
    phrase = image.labels[image.labels != IGNORE_INDEX].tolist()[:-2]
    assert tok.decode(phrase).strip() and tok.convert_ids_to_tokens(
        image.labels[image.labels != IGNORE_INDEX].tolist()[-2:]) == ["<region0>", "<region2>"]
    with pytest.raises(InvalidRequestError, match="region choice"):
        builder.build(make_record("caption"))


def test_text_and_image_samples_batch_together(train_model_dir, builder):
    """A text sample's loss does not depend on its batch mates (positions, padding)."""
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.model import TrainingModel

    vlm, _ = load_model(train_model_dir)
    model = TrainingModel(vlm)
    samples = [builder.build(make_record("detect", "img0.png")), builder.build(_record()),
               builder.build(make_record("vqa", "img1.png", boxes=[]))]
    with torch.no_grad():
        batch = float(model(**collate_samples(samples))["loss"])
        singles = [float(model(**collate_samples([s]))["loss"]) for s in samples]
        alone = model.hidden_states(**collate_samples([samples[1]]))[0]
        mixed = model.hidden_states(**collate_samples(samples))[0]
    assert batch == pytest.approx(sum(singles) / 3, rel=1e-4)
    n = alone.shape[1]
    torch.testing.assert_close(mixed[1, :n], alone[0], rtol=1e-4, atol=1e-5)


def test_image_free_batch_gives_the_vision_side_zero_gradients(train_model_dir, builder):
    """DDP without find_unused_parameters needs a gradient for every trainable tensor."""
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.freezing import apply_stage
    from vlxseek_core.training.model import TrainingModel

    vlm, _ = load_model(train_model_dir)
    vlm.train()
    apply_stage(vlm, 0, builder.prompt_tokenizer.tokenizer)
    out = TrainingModel(vlm)(**collate_samples([builder.build(_record())] * 2))
    out["loss"].backward()
    missing = [n for n, p in vlm.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    vision = [p.grad for n, p in vlm.named_parameters()
              if n.startswith(("model.vision_tower", "model.object_vp_extractor",
                               "model.mm_projector"))]
    assert vision and all(float(g.abs().max()) == 0.0 for g in vision)
    assert float(vlm.model.embed_tokens.weight.grad.abs().max()) > 0


def test_make_text_regions_cli_and_a_short_training_run(train_model_dir, tmp_path, capsys):
    from vlxseek_core.cli import main

    data = str(tmp_path / "text.jsonl")
    assert main(["make-text-regions", data, "--num", "12", "--seed", "2", "--tasks",
                 "detect", "caption", "--max-regions", "3"]) == 0
    assert "wrote 12 records" in capsys.readouterr().out
    lines = [json.loads(x) for x in open(data)]
    assert {r["task"] for r in lines} == {"detect", "caption"}
    assert main(["make-text-regions", data, "--num", "2", "--max-regions", "0"]) == 2
    out = str(tmp_path / "run")
    assert main(["train", "--stage", "0", "--model", train_model_dir, "--data", data,
                 "--out", out, "--max-steps", "2", "--batch-size", "4", "--device", "cpu",
                 "--loss-on", "regions", "--save-steps", "2", "--adam-beta2", "0.99"]) == 0
    info = json.load(open(f"{out}/vlxseek_training.json"))
    assert info["loss_on"] == "regions" and info["adam_beta2"] == 0.99
    assert "6 of 12 records choose no region and are left out" in capsys.readouterr().err
    captions = str(tmp_path / "captions.jsonl")
    with open(captions, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in lines if r["task"] == "caption")
    assert main(["train", "--stage", "0", "--model", train_model_dir, "--data", captions,
                 "--out", out + "2", "--max-steps", "1", "--loss-on", "regions"]) == 2
    assert "no record's answer chooses a region" in capsys.readouterr().err
    for beta2 in ("1.0", "-0.1"):
        assert main(["train", "--stage", "0", "--model", train_model_dir, "--data", data,
                     "--out", out + "3", "--max-steps", "1", "--adam-beta2", beta2]) == 2
        assert "--adam-beta2 must be in [0, 1)" in capsys.readouterr().err


def test_phrase_rows_from_the_scene_categories(builder, tmp_path, capsys):
    """--scene-categories: the rows are the train split's scene categories, phrases included
    (the lookup must gather both tokens of "red circle"); the held-out combinations never
    occur, and every record builds."""
    from vlxseek_core.cli import main
    from vlxseek_core.training.scenes import HELDOUT_COLOUR_SHAPES, split_categories

    data = str(tmp_path / "phrases.jsonl")
    assert main(["make-text-regions", data, "--num", "60", "--seed", "4", "--tasks",
                 "detect_all", "--min-regions", "3", "--max-regions", "3",
                 "--scene-categories"]) == 0
    records = [json.loads(x) for x in open(data)]
    used = {t for r in records for t in r["text_regions"]}
    assert used <= set(split_categories("train")) and len(used) > 8
    assert not used & set(HELDOUT_COLOUR_SHAPES)
    assert any(" " in t for t in used)  # two-word phrases are rows
    for r in records:
        assert len(r["text_regions"]) == 3
        builder.build(r)
    capsys.readouterr()
    assert main(["make-text-regions", data, "--num", "4", "--words", "red ball", "blue ball",
                 "red cup", "--max-regions", "2"]) == 0
    assert {t for x in open(data) for t in json.loads(x)["text_regions"]} <= {
        "red ball", "blue ball", "red cup"}
    capsys.readouterr()
    assert main(["make-text-regions", data, "--num", "4", "--words", "a", "b", "c",
                 "--scene-categories"]) == 2
    assert "not both" in capsys.readouterr().err


def test_random_words_are_one_token_both_ways_and_reproducible(builder):
    from vlxseek_core.training.text_regions import random_words

    words = random_words(300, seed=4)
    assert words == random_words(300, seed=4) and words != random_words(300, seed=5)
    assert len(set(words)) == 300
    tok = builder.prompt_tokenizer
    assert all(len(tok.text_ids(w)) == 1 and len(tok.text_ids(" " + w)) == 1 for w in words)
    with pytest.raises(InvalidRequestError):
        random_words(-1)
    with pytest.raises(InvalidRequestError):
        random_words(10**6)


def test_make_text_regions_cli_random_words(tmp_path, capsys):
    from vlxseek_core.cli import main
    from vlxseek_core.training.text_regions import random_words

    data = str(tmp_path / "r.jsonl")
    assert main(["make-text-regions", data, "--num", "400", "--seed", "6", "--tasks", "refer",
                 "--random-words", "200"]) == 0
    used = {w for line in open(data) for w in json.loads(line)["text_regions"]}
    allowed = set(DEFAULT_WORDS) | set(random_words(200, 6))
    assert used <= allowed and len(used - set(DEFAULT_WORDS)) > 100
    assert main(["make-text-regions", data, "--num", "2", "--random-words", "-3"]) == 2
    assert "--random-words must be >= 0" in capsys.readouterr().err
    for option in ("--num", "--seed"):
        missing = str(tmp_path / "none.jsonl")
        assert main(["make-text-regions", missing, option, "-1"]) == 2
        assert f"{option} must be >= 0, got -1" in capsys.readouterr().err
        assert not os.path.exists(missing)


def test_records_are_written_whole_or_not_at_all(tmp_path):
    """A write stopped half-way leaves no file: the recipe script writes a set once, skipping
    it when the file exists (record_helpers.written_whole)."""
    from vlxseek_core.training.text_regions import write_text_region_records

    path = tmp_path / "t.jsonl"
    with pytest.raises(TypeError):  # the second record cannot be written
        write_text_region_records(str(path), [{"a": 1}, {"b": object()}])
    assert list(tmp_path.iterdir()) == []
    assert write_text_region_records(str(path), [{"a": 1}, {"b": 2}]) == 2
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]
