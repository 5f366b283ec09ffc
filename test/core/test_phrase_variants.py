"""benchmarks/phrase_variants.py: held-out records with the query's phrasing edited."""
import json
import re

import pytest

from benchmarks import phrase_variants as P
from vlxseek_core.training import scene_data as D

KW = dict(max_objects=4, max_copies=1, max_distractors=0, detect_all_order="random",
          tasks=("detect", "refer", "detect_all"), refer_per_scene=2, rejection_rate=0.0,
          detect_extra_absent=0.0)


@pytest.fixture(scope="module")
def records():
    return [r.to_json() for seed in range(40)
            for r in D.scene_sample(seed, "heldout", 112, **KW)[1]]


def _turns(record):
    return [t["value"] for t in record["conversations"]]


def test_refer_variants_edit_only_the_named_text(records):
    out = P.variants(records, keeps_bare_token=lambda phrase: phrase != "cup")
    refer = [r for r in records if r["task"] == "refer" and r["meta"]["kind"] == "category"]
    assert len(refer) > 10 and all(len(out[f"refer_{p}_{g}"]) == len(refer)
                                   for p in ("the", "bare") for g in ("the", "bare"))
    for k, rec in enumerate(refer):
        bare = rec["query"][len("the "):]
        human, gpt = _turns(rec)
        for p in ("the", "bare"):
            for g in ("the", "bare"):
                h, a = _turns(out[f"refer_{p}_{g}"][k])
                words = rec["query"] if p == "the" else bare
                assert h == human.replace(rec["query"], words)
                label = rec["query"] if g == "the" else bare
                assert a == gpt.replace(f"<ground>{rec['query']}<", f"<ground>{label}<")
                assert re.findall(r"<region\d+>", a) == re.findall(r"<region\d+>", gpt)
                assert out[f"refer_{p}_{g}"][k]["bbox_list"] == rec["bbox_list"]
        assert _turns(out["refer_space"][k])[1].startswith(f"<ground> {bare}</ground>")
    star = out["refer_star"]
    assert len(star) == sum(r["query"] != "the cup" for r in refer)
    assert all(_turns(r)[1].startswith("<ground>*") for r in star)
    assert [_turns(r) for r in out["refer_the_the"]] == [_turns(r) for r in refer]


def test_detect_all_variants(records):
    out = P.variants(records)
    assert "refer_star" not in out
    detect_all = [r for r in records if r["task"] == "detect_all"]
    assert out["detect_all_bare"] == detect_all
    for rec, edited in zip(detect_all, out["detect_all_the"]):
        labels = re.findall(r"<ground>([^<]*)</ground>", _turns(rec)[1])
        assert re.findall(r"<ground>([^<]*)</ground>", _turns(edited)[1]) == [
            "the " + lab for lab in labels]
    assert "the " not in _turns(detect_all[0])[1]  # the input is not edited in place


def test_detect_single_names_each_object_alone_as_make_scenes_would(records):
    out = P.variants(records)["detect_single"]
    one_name = next(r for r in records if r["task"] == "detect" and ";" not in r["query"])
    template = _turns(one_name)[0].replace(f" {one_name['query']} ", " {} ")
    detect_all = [r for r in records if r["task"] == "detect_all"]
    expected = [(rec["image"], lab[len("the "):] if lab.startswith("the ") else lab, regions)
                for rec in detect_all
                for lab, regions in re.findall(r"<ground>([^<]*)</ground><objects>(.*?)"
                                               r"</objects>", _turns(rec)[1])]
    assert len(out) == len(expected) > len(detect_all)
    for single, (image, label, regions) in zip(out, expected):
        assert (single["image"], single["task"], single["query"]) == (image, "detect", label)
        assert _turns(single)[1] == f"<ground>{label}</ground><objects>{regions}</objects>"
        assert single["meta"]["label"] == label
        assert _turns(single)[0] == template.format(label)  # as make-scenes writes it
    heldout = [s["meta"]["heldout_phrase"] for s in out]
    assert any(heldout) and not all(heldout)  # both kinds occur in the held-out scenes


def test_refuses_records_that_do_not_name_their_query(records):
    rec = next(r for r in records if r["task"] == "refer" and r["meta"]["kind"] == "category")
    broken = json.loads(json.dumps(rec))
    broken["conversations"][1]["value"] = "<ground>something else</ground>"
    with pytest.raises(ValueError, match="does not name"):
        P.variants([broken])
    broken = json.loads(json.dumps(rec).replace(rec["query"], rec["query"][len("the "):]))
    with pytest.raises(ValueError, match="starts with 'the '"):
        P.variants([broken])


def test_main_writes_files_with_the_real_tokenizer(records, tmp_path, tiny_model_dir):
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    written = P.main([str(data), str(tmp_path / "out"), "--model", tiny_model_dir,
                      "--limit", "5", "--share-rows", str(tmp_path / "shared")])
    assert written.pop("shared_words") == 11  # 13 scene words; 2 are two tokens bare
    assert set(written) == {"refer_the_the", "refer_the_bare", "refer_bare_the",
                            "refer_bare_bare", "refer_space", "refer_star", "detect_all_bare",
                            "detect_all_the", "detect_single"}
    assert all(n == 5 for n in written.values())
    assert (tmp_path / "shared" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):  # argparse: "--share-rows needs --model"
        P.main([str(data), str(tmp_path / "out2"), "--share-rows", str(tmp_path / "s2")])
    assert not (tmp_path / "s2").exists()
    star = [json.loads(line) for line in open(tmp_path / "out" / "refer_star.jsonl")]
    assert all(_turns(r)[1].startswith("<ground>*") for r in star)


def test_share_word_rows_copies_only_the_spaced_rows(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from vlxseek_core.tokenizer import load_tokenizer

    out = str(tmp_path / "shared")
    words = P.share_word_rows(tiny_model_dir, out)
    assert {"red", "blue", "cat", "circle"} <= set(words)
    assert "astronaut" not in words  # two tokens without the space: nothing to share
    tok = load_tokenizer(out)
    before = load_file(f"{tiny_model_dir}/model.safetensors")
    after = load_file(f"{out}/model.safetensors")
    key = next(k for k in after if k.endswith("embed_tokens.weight"))
    spaced = [tok(" " + w)["input_ids"][0] for w in words]
    for w, s in zip(words, spaced):
        assert after[key][s].equal(before[key][tok(w)["input_ids"][0]])
        assert not after[key][s].equal(before[key][s])
    keep = [i for i in range(after[key].shape[0]) if i not in set(spaced)]
    assert after[key][keep].equal(before[key][keep])
    assert all(after[k].equal(before[k]) for k in before if k != key)
    with pytest.raises(ValueError, match="exists"):
        P.share_word_rows(tiny_model_dir, out)
    with pytest.raises(ValueError, match="no model.safetensors"):
        P.share_word_rows(str(tmp_path), str(tmp_path / "other"))
