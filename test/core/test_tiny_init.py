"""make-tiny-model --space-variant-similarity: related embedding rows of ``red`` / `` red``."""
import json

import pytest
import torch

from vlxseek_core.tiny import relate_space_variants, space_variant_pairs


@pytest.fixture(scope="module")
def tokenizer():
    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    return build_qwen25_vl_tokenizer()


def _ids(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, text
    return ids[0]


def test_pairs_are_words_and_their_space_prefixed_forms(tokenizer):
    pairs = space_variant_pairs(tokenizer)
    assert len(pairs) > 10000
    as_set = set(pairs)
    for word in ("red", "cat", "circle", "the"):
        assert (_ids(tokenizer, " " + word), _ids(tokenizer, word)) in as_set
    added = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.get_added_vocab()}
    for spaced, bare in pairs:
        assert spaced not in added and bare not in added
        assert tokenizer.convert_ids_to_tokens(spaced) == \
            "\u0120" + tokenizer.convert_ids_to_tokens(bare)
    assert len({spaced for spaced, _ in pairs}) == len(pairs)  # one bare row per spaced row


def test_relate_sets_the_cosine_and_touches_only_spaced_rows():
    torch.manual_seed(0)
    weight = torch.randn(10, 512)
    before = weight.clone()
    pairs = [(1, 0), (3, 2), (5, 4)]
    relate_space_variants(weight, pairs, 0.9)
    for spaced, bare in pairs:
        cos = float(torch.nn.functional.cosine_similarity(weight[spaced], weight[bare], dim=0))
        assert cos == pytest.approx(0.9, abs=0.05)
        assert float(weight[spaced].norm()) == pytest.approx(float(before[spaced].norm()), rel=0.1)
        assert torch.equal(weight[bare], before[bare])
    assert torch.equal(weight[6:], before[6:])
    relate_space_variants(weight, [(7, 6)], 1.0)
    assert torch.equal(weight[7], weight[6])
    relate_space_variants(weight, [(9, 8)], 0.0)
    assert torch.equal(weight[9], before[9])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="in \\[0, 1\\]"):
            relate_space_variants(weight, pairs, bad)


def _row_cosine(directory, tokenizer, a, b):
    from safetensors.torch import load_file

    state = load_file(str(directory / "model.safetensors"))
    emb = next(v for k, v in state.items() if k.endswith("embed_tokens.weight")).float()
    return float(torch.nn.functional.cosine_similarity(
        emb[_ids(tokenizer, a)], emb[_ids(tokenizer, b)], dim=0))


def test_make_tiny_model_cli_relates_the_rows(tmp_path, tokenizer, capsys):
    from vlxseek_core.cli import main

    assert main(["make-tiny-model", str(tmp_path / "r"), "--space-variant-similarity",
                 "0.9"]) == 0
    assert main(["make-tiny-model", str(tmp_path / "p")]) == 0
    related = json.loads((tmp_path / "r" / "config.json").read_text())
    plain = json.loads((tmp_path / "p" / "config.json").read_text())
    assert related.pop("vlxseek_space_variant_similarity") == 0.9
    assert "vlxseek_space_variant_similarity" not in plain
    assert related == plain
    assert _row_cosine(tmp_path / "r", tokenizer, " red", "red") > 0.7
    assert _row_cosine(tmp_path / "r", tokenizer, " cat", "cat") > 0.7
    assert abs(_row_cosine(tmp_path / "r", tokenizer, " red", "cat")) < 0.5
    assert abs(_row_cosine(tmp_path / "p", tokenizer, " red", "red")) < 0.5
    capsys.readouterr()
    assert main(["make-tiny-model", str(tmp_path / "x"), "--space-variant-similarity",
                 "2"]) == 2
    assert "in [0, 1]" in capsys.readouterr().err
    assert main(["make-tiny-model", str(tmp_path / "v"), "--family", "vlx_seek_1_5",
                 "--space-variant-similarity", "0.5"]) == 2
    assert "VLM-FO1 only" in capsys.readouterr().err
