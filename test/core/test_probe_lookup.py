"""benchmarks/probe_lookup.py: the synthetic region-lookup probe of issue 9."""
import math
import random

import torch

from benchmarks.lookup_tasks import GROUND, OBJECTS, REGIONS, VOCAB, WORDS, batch, make_sample
from benchmarks.probe_lookup import accuracies, main


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
    acc = accuracies(logits.argmax(-1), labels, is_caption)
    assert acc["first_region_acc"] == 1.0 and acc["region_acc"] == 0.5
    assert math.isnan(acc["word_acc"])


def test_main_runs_and_reports():
    out = main(["--steps", "3", "--batch-size", "4", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--log-every", "3", "--tasks", "caption=1", "detect_all=1"])
    assert set(out) == {"first_region_acc", "region_acc", "word_acc", "rejection_acc", "loss"}
    assert 0 < out["loss"] < 20


def test_prefix_is_random_or_fixed():
    rng = random.Random(5)
    random_prefixes = {tuple(make_sample("detect", rng, 2, 3, prefix=6)[0][:6]) for _ in range(5)}
    fixed = {tuple(make_sample("detect", rng, 2, 3, prefix=6, fixed_prefix=True)[0][:6])
             for _ in range(5)}
    assert len(random_prefixes) > 1 and len(fixed) == 1
    prompt, _ = make_sample("detect", rng, 2, 3, prefix=0)
    assert prompt[0] == REGIONS[0]


def test_attribute_tasks_name_the_one_row_of_the_colour():
    from benchmarks.lookup_tasks import COLOURS, N_COLOURS, OBJECTS_END

    rng = random.Random(6)
    for task in ("recall", "recall_ground", "detect_colour", "detect_colour_short"):
        for _ in range(30):
            prompt, answer = make_sample(task, rng, 2, 4, prefix=3)
            colour = COLOURS.index(prompt[-1])
            rows = [w for w in _pairs(prompt)]
            assert len({(w - WORDS[0]) % N_COLOURS for w in rows}) == len(rows)  # distinct
            (match,) = [w for w in rows if (w - WORDS[0]) % N_COLOURS == colour]
            if task == "recall":
                assert answer[0] == match
            elif task == "recall_ground":
                assert answer[:5] == [GROUND, prompt[-1], answer[2], OBJECTS, match]
            else:
                region = answer[4] if task == "detect_colour" else answer[0]
                assert region == _pairs(prompt)[match]
                assert task != "detect_colour" or answer[5] == OBJECTS_END


def test_detect_shape_names_the_one_row_of_the_shape():
    from benchmarks.lookup_tasks import (DETECT_SHAPE, GROUND_END, N_COLOURS, OBJECTS_END,
                                         SHAPES)

    rng = random.Random(8)
    for _ in range(30):
        prompt, answer = make_sample("detect_shape", rng, 2, 8, prefix=3)
        assert prompt[-2] == DETECT_SHAPE
        shape = SHAPES.index(prompt[-1])
        rows = _pairs(prompt)
        assert 2 <= len(rows) <= len(SHAPES)
        assert len({(w - WORDS[0]) // N_COLOURS for w in rows}) == len(rows)  # distinct
        (match,) = [w for w in rows if (w - WORDS[0]) // N_COLOURS == shape]
        assert answer == [GROUND, prompt[-1], GROUND_END, OBJECTS, rows[match], OBJECTS_END,
                          answer[-1]]


def test_detect_many_draws_blocks_with_replacement():
    rng = random.Random(7)
    prompt, answer = make_sample("detect_many", rng, 2, 2, prefix=0)
    pairs = _pairs(prompt)
    body = answer[:-1]
    assert len(body) == 8 * 6 and [pairs[w] for w in body[1::6]] == body[4::6]
    assert len(set(body[1::6])) <= 2


def test_list_loss_labels_the_prompt_region_tokens_only():
    from benchmarks.probe_lookup import with_list_loss

    samples = [([0, WORDS[0], 1, WORDS[1]], [GROUND, WORDS[1]]), ([0, WORDS[2]], [GROUND])]
    ids, labels, mask, _ = batch(samples, ["detect", "detect"])
    out = with_list_loss(ids, labels, mask)
    assert out[0].tolist() == [0, -100, 1, -100, GROUND, WORDS[1]]
    assert out[1].tolist() == [0, -100, GROUND, -100, -100, -100]  # padding (id 0) unlabelled


def test_echo_asks_for_the_region_before_the_last_word():
    from benchmarks.lookup_tasks import ECHO

    rng = random.Random(8)
    for _ in range(20):
        prompt, answer = make_sample("echo", rng, 2, 4, prefix=2)
        assert prompt[-3] == ECHO and answer[0] == prompt[-2] == _pairs(prompt)[prompt[-1]]


def test_row_echo_labels_each_row_with_its_region_token():
    from benchmarks.probe_lookup import with_row_echo

    samples = [([150, 0, WORDS[0], 1, WORDS[1], 136], [GROUND, 1])]
    ids, labels, _, _ = batch(samples, ["detect"])
    # next-token labels: the position after row K is labelled <regionK>; answer labels stay
    assert with_row_echo(ids, labels).tolist() == [[-100, -100, -100, 0, -100, 1, GROUND, 1]]


def test_curriculum_phases_parse_and_cover_their_steps():
    import pytest

    from benchmarks.lookup_tasks import parse_curriculum, phase_at

    phases = parse_curriculum(["2-2:3", "3-5:2:features:16"])
    assert phases == [(2, 2, 3, "words", 0), (3, 5, 2, "features", 16)]
    assert [phase_at(phases, s) for s in range(1, 6)] == (
        [(2, 2, "words", 0)] * 3 + [(3, 5, "features", 16)] * 2)
    assert phase_at(phases, 99) == (3, 5, "features", 16)  # past the end: the last phase
    assert parse_curriculum(["2-2:3"], rows="mixed") == [(2, 2, 3, "mixed", 0)]
    for bad in ("2-2", "2:10", "3-2:10", "0-2:10", "2-2:0", "a-b:c", f"2-{len(WORDS) + 1}:5",
                "2-2:5:pixels", "2-2:5:words:x", "2-2:5:words:-1", "2-2:5:words:3:1"):
        with pytest.raises(ValueError, match="curriculum phase"):
            parse_curriculum([bad])


def test_main_runs_a_curriculum():
    out = main(["--curriculum", "2-2:2", "3-3:1", "--batch-size", "4", "--layers", "1",
                "--hidden", "32", "--heads", "2", "--log-every", "3"])
    assert 0 < out["loss"] < 20 and 0 <= out["first_region_acc"] <= 1


def test_list_rows_are_the_prompt_words_after_a_region_token():
    from benchmarks.lookup_tasks import ECHO
    from benchmarks.probe_lookup import list_rows

    prompt = [150, 0, WORDS[3], 1, WORDS[4], ECHO, 1, WORDS[4]]
    samples = [(prompt, [1, 137]), ([150, 0, WORDS[5], 136], [GROUND, WORDS[5]])]
    ids, labels, _, _ = batch(samples, ["echo", "detect"])
    rows = list_rows(ids, labels)
    assert rows[0].nonzero().flatten().tolist() == [2, 4, 7]
    # the answer's word follows no region token; a word in the answer is never a row
    assert rows[1].nonzero().flatten().tolist() == [2]


def _tiny_llm_and_batch(seed: int, samples: int):
    """A 1-layer random Qwen2 (300 tokens, tied) and a batch (ids, labels, mask) of
    ``samples`` detect_all samples of 2-3 regions."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, tie_word_embeddings=True))
    rng = random.Random(seed)
    ids, labels, mask, _ = batch([make_sample("detect_all", rng, 2, 3, prefix=2)
                                  for _ in range(samples)], ["detect_all"] * samples)
    return model, (ids, labels, mask)


def test_feature_rows_share_codes_by_attribute_and_replace_the_row_embeddings():
    from benchmarks.lookup_tasks import N_COLOURS
    from benchmarks.probe_lookup import FeatureRows, list_rows, sparse_loss

    torch.manual_seed(0)
    rows_of = FeatureRows(feature_dim=16, hidden=32, noise=0.0, seed=0)
    same_colour = torch.tensor([WORDS[0], WORDS[0] + N_COLOURS])  # colour 0, shapes 0 and 1
    out = rows_of(same_colour)
    assert out.shape == (2, 32) and out.dtype == torch.float32
    assert torch.equal(rows_of(same_colour), out)  # no noise: deterministic
    assert not torch.allclose(out[0], out[1])  # the shape code differs
    noisy = FeatureRows(feature_dim=16, hidden=32, noise=1.0, seed=0)
    assert not torch.equal(noisy(same_colour[:1]), noisy(same_colour[:1]))

    model, (ids, labels, mask) = _tiny_llm_and_batch(seed=3, samples=2)
    rows = list_rows(ids, labels)
    plain, _ = sparse_loss(model, ids, mask, labels, labels)
    as_words, _ = sparse_loss(model, ids, mask, labels, labels, rows & False, rows_of)
    as_features, _ = sparse_loss(model, ids, mask, labels, labels, rows, rows_of)
    torch.testing.assert_close(as_words, plain)
    assert not torch.allclose(as_features, plain)
    as_features.backward()  # the connector trains through the LLM's loss
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in rows_of.connector.parameters())


def test_main_runs_feature_rows_after_words():
    out = main(["--curriculum", "2-2:2", "2-2:2:features:5", "3-3:1:mixed", "--batch-size", "4",
                "--layers", "1", "--hidden", "32", "--heads", "2", "--log-every", "5",
                "--connector-lr-scale", "0.1", "--feature-noise", "1.0"])
    assert 0 < out["loss"] < 20 and 0 <= out["first_region_acc"] <= 1


def test_image_tokens_follow_the_prefix():
    rng = random.Random(0)
    prompt, _ = make_sample("detect", rng, 2, 2, prefix=3, fixed_prefix=True, image_tokens=5)
    from benchmarks.lookup_tasks import FILLER

    assert prompt[:3] == FILLER[:3] and all(t in FILLER for t in prompt[3:8])
    assert prompt[8] == REGIONS[0] and prompt[9] in WORDS  # the list starts after the image


def test_region_ids_shuffled_or_random_keep_answers_consistent():
    rng = random.Random(9)
    seen_orders = set()
    for mode in ("shuffled", "random"):
        for _ in range(30):
            prompt, answer = make_sample("detect_all", rng, 3, 3, prefix=0, region_ids=mode)
            pairs = _pairs(prompt)
            ids = [prompt[i] for i in range(0, 6, 2)]
            assert len(set(ids)) == 3 and all(i in REGIONS for i in ids)
            if mode == "shuffled":
                assert sorted(ids) == REGIONS[:3]
                seen_orders.add(tuple(ids))
            body = answer[:-1]
            assert [pairs[w] for w in body[1::6]] == body[4::6]
    assert len(seen_orders) > 1  # not always 0, 1, 2
    prompt, _ = make_sample("detect", rng, 3, 3, prefix=0)  # default: FO1 order
    assert prompt[0:6:2] == REGIONS[:3]


def test_absent_words_are_answered_none_after_the_task_text():
    from benchmarks.lookup_tasks import DETECT_ALL, NONE, OBJECTS_END, TASK_TEXT

    rng = random.Random(10)
    with_absent = 0
    for _ in range(40):
        prompt, answer = make_sample("detect_all", rng, 2, 3, prefix=0, absent=0.5,
                                     task_text=4)
        assert prompt[-5:] == [DETECT_ALL] + TASK_TEXT[:4]
        pairs = _pairs(prompt)
        blocks = [answer[i:i + 6] for i in range(0, len(answer) - 1, 6)]
        for ground, word, _, objects, choice, end in blocks:
            assert (ground, objects, end) == (GROUND, OBJECTS, OBJECTS_END)
            assert choice == (pairs[word] if word in pairs else NONE)
        with_absent += len(blocks) - len(pairs)
    assert 10 < with_absent < 30  # about half of the samples name one absent word


def test_loss_on_regions_or_choices_keeps_the_choices():
    from benchmarks.lookup_tasks import NONE
    from benchmarks.probe_lookup import region_choices_only

    labels = torch.tensor([[-100, GROUND, WORDS[3], OBJECTS, 7, NONE, 136]])
    assert region_choices_only(labels).tolist() == [[-100, -100, -100, -100, 7, NONE, -100]]
    assert region_choices_only(labels, words=True).tolist() == [
        [-100, -100, WORDS[3], -100, 7, NONE, -100]]


def test_sparse_loss_equals_the_full_softmax_loss():
    from benchmarks.probe_lookup import region_choices_only, sparse_loss

    torch.manual_seed(0)
    model, (ids, labels, mask) = _tiny_llm_and_batch(seed=11, samples=3)
    for loss_labels in (labels, region_choices_only(labels, words=True)):
        loss, pred = sparse_loss(model, ids, mask, labels, loss_labels)
        full = model(input_ids=ids, attention_mask=mask, labels=loss_labels)
        torch.testing.assert_close(loss, full.loss)
        scored = (labels[:, 1:] >= 0) & (labels[:, 1:] < len(REGIONS))
        assert torch.equal(pred[:, :-1][scored], full.logits[:, :-1].argmax(-1)[scored])


def test_main_runs_with_a_large_vocabulary_and_optimizer_options():
    out = main(["--steps", "2", "--batch-size", "4", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--log-every", "2", "--vocab", "1000", "--beta2", "0.99",
                "--embedding-lr-scale", "0.1", "--freeze-vocab", "--loss-on", "choices"])
    assert 0 < out["loss"] < 20


def test_by_length_scores_fresh_detect_all_prompts_of_each_length(monkeypatch, capsys):
    import benchmarks.probe_lookup as probe

    asked = []
    real = probe.make_sample

    def spy(task, rng, n_min, n_max, *args):
        asked.append((task, n_min, n_max, args[3]))  # args: prefix, fixed, ids, absent, ...
        return real(task, rng, n_min, n_max, *args)

    monkeypatch.setattr(probe, "make_sample", spy)
    out = main(["--steps", "2", "--batch-size", "4", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--log-every", "2", "--min-regions", "2", "--max-regions", "2",
                "--absent", "0.5", "--by-length", "3", "5"])
    assert set(out) >= {"first_region_acc_n3", "first_region_acc_n5"}
    assert all(0 <= out[f"first_region_acc_n{n}"] <= 1 for n in (3, 5))
    assert {absent for *_, absent in asked[:8]} == {0.5}  # the two training batches of 4
    evaluated = asked[8:]
    assert len(evaluated) == 2 * 256
    assert {(t, lo, hi) for t, lo, hi, _ in evaluated} == {
        ("detect_all", 3, 3), ("detect_all", 5, 5)}
    assert {absent for *_, absent in evaluated} == {0.0}  # no rejection in the score
    assert "by length 3:" in capsys.readouterr().out


def test_by_length_rejects_lengths_outside_the_word_list():
    import pytest

    for bad in ("0", str(len(WORDS) + 1)):
        with pytest.raises(SystemExit):
            main(["--steps", "1", "--by-length", bad])


def test_per_sample_loss_mean_weights_each_sample_alike():
    from benchmarks.probe_lookup import region_choices_only, sparse_loss

    torch.manual_seed(0)
    model, (ids, labels, mask) = _tiny_llm_and_batch(seed=12, samples=4)
    loss_labels = region_choices_only(labels, words=True)
    counts = (loss_labels[:, 1:] != -100).sum(1)
    assert len(set(counts.tolist())) > 1  # 2- and 3-region samples: the two means differ
    token, _ = sparse_loss(model, ids, mask, labels, loss_labels)
    sample, _ = sparse_loss(model, ids, mask, labels, loss_labels, per_sample=True)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), loss_labels[:, 1:],
                                           reduction="none")
    torch.testing.assert_close(sample, (ce.sum(1) / counts).mean())
    torch.testing.assert_close(token, ce.sum() / counts.sum())
    assert not torch.allclose(token, sample)


def test_init_from_a_checkpoint_computes_what_its_text_model_computes(tiny_model_dir):
    """The sandbox started from a vlxseek checkpoint gives, on a sandbox prompt, the logits
    the checkpoint's own LLM gives on the real prompt that ``vlxseek train`` builds."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from benchmarks.lookup_from_checkpoint import layout_and_ids, sandbox_state
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.samples import SampleBuilder
    from vlxseek_core.training.text_regions import DEFAULT_WORDS, make_text_region_records

    state, info = sandbox_state(tiny_model_dir)
    prefix, task_text, real = layout_and_ids(load_tokenizer(tiny_model_dir))
    assert (info["prefix"], info["task_text"]) == (prefix, task_text) == (3, 21)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=info["hidden"], intermediate_size=info["intermediate"],
        num_hidden_layers=info["layers"], num_attention_heads=info["heads"],
        num_key_value_heads=info["kv_heads"], rope_theta=info["rope_theta"],
        tie_word_embeddings=True)).eval()
    model.load_state_dict(state, strict=True)
    vlm, _ = load_model(tiny_model_dir)
    tokenizer = load_tokenizer(tiny_model_dir)
    builder = SampleBuilder(tokenizer, None, ".", loss_on="choices")
    record = make_text_region_records(1, seed=3, min_regions=4, max_regions=4,
                                      tasks=("detect_all",))[0]
    real_prompt, real_answer = builder.token_ids(record)
    # the same sample in sandbox ids: words by their place in DEFAULT_WORDS
    words = [WORDS[DEFAULT_WORDS.index(w)] for w in record["text_regions"]]
    to_sandbox = {r: s for s, r in real.items() if s not in range(140, 240)}
    body = real_prompt[prefix:-(task_text + 1)]
    assert body == [t for k, w in enumerate(words) for t in (real[k], real[w])]
    sandbox_ids = (list(range(140, 140 + prefix)) + [to_sandbox[t] for t in body] + [136]
                   + list(range(210, 210 + task_text)) + [to_sandbox[t] for t in real_answer])
    assert [real[s] for s in sandbox_ids] == real_prompt + real_answer
    with torch.no_grad():
        ours = model(torch.tensor([sandbox_ids])).logits[0]
        theirs = vlm.lm_head(vlm.model(input_ids=torch.tensor([real_prompt + real_answer]),
                                       use_cache=False).last_hidden_state)[0]
    columns = sorted(set(real) & set(range(100)) | set(range(100, 135)))
    torch.testing.assert_close(ours[:, columns], theirs[:, [real[c] for c in columns]],
                               rtol=1e-4, atol=1e-5)


def test_main_runs_from_a_checkpoint(tiny_model_dir, capsys):
    out = main(["--init-from", tiny_model_dir, "--steps", "2", "--batch-size", "4",
                "--log-every", "2", "--min-regions", "2", "--max-regions", "3"])
    assert 0 < out["loss"] < 30
    assert f"from {tiny_model_dir}" in capsys.readouterr().out


def test_reset_optimizer_restarts_moments_and_warm_up_at_each_phase(monkeypatch):
    import benchmarks.probe_lookup as probe

    phases = probe.parse_curriculum(["2-2:3", "3-3:2", "2-4:1"])
    assert [s for s in range(1, 8) if probe.phase_at_start(phases, s)] == [1, 4, 6]
    rates, steps_seen = [], []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        p = self.param_groups[0]["params"][0]
        steps_seen.append(int(self.state[p]["step"]) if p in self.state else 0)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    main(["--batch-size", "2", "--layers", "1", "--hidden", "32", "--heads", "2",
          "--log-every", "6", "--lr", "1.0", "--warmup", "2", "--reset-optimizer",
          "--curriculum", "2-2:3", "3-3:2", "2-4:1"])
    assert rates == [0.5, 1.0, 1.0, 0.5, 1.0, 0.5]  # the warm-up starts again per phase
    assert steps_seen == [0, 1, 2, 0, 1, 0]  # fresh AdamW state per phase


def test_pair_tasks_name_each_row_by_its_colour_then_its_shape():
    from benchmarks.lookup_tasks import (COLOURS, DETECT, DETECT_ALL, END, N_COLOURS, SHAPES,
                                         pair_label)

    assert pair_label(WORDS[0]) == [COLOURS[0], SHAPES[0]]
    assert pair_label(WORDS[N_COLOURS + 2]) == [COLOURS[2], SHAPES[1]]
    assert len({tuple(pair_label(w)) for w in WORDS}) == len(WORDS)  # a label names one word
    rng = random.Random(9)
    shared = 0
    for _ in range(40):
        prompt, answer = make_sample("detect_pair", rng, 5, 8, prefix=3)
        pairs = _pairs(prompt)
        word = next(w for w in pairs if pair_label(w) == prompt[-2:])
        assert prompt[-3] == DETECT
        assert answer[:3] == [GROUND] + pair_label(word) and answer[4] == OBJECTS
        assert answer[5] == pairs[word]
        shared += any(set(pair_label(w)) & set(pair_label(word)) for w in pairs if w != word)
        prompt, answer = make_sample("detect_all_pair", rng, 3, 6, prefix=0)
        pairs = _pairs(prompt)
        assert prompt[-1] == DETECT_ALL
        blocks = [answer[i:i + 7] for i in range(0, len(answer) - 1, 7)]
        assert len(blocks) == len(pairs) and answer[-1] == END
        named = {}
        for block in blocks:
            (word,) = [w for w in pairs if pair_label(w) == block[1:3]]
            named[word] = block[5]
        assert named == pairs  # every row once, by its own label
    assert shared > 30  # most lists of 5-8 rows hold a row sharing the target's colour or shape


def test_by_length_can_score_the_pair_task(monkeypatch):
    import benchmarks.probe_lookup as probe

    asked = []
    real = probe.make_sample

    def spy(task, rng, n_min, n_max, *args):
        asked.append(task)
        return real(task, rng, n_min, n_max, *args)

    monkeypatch.setattr(probe, "make_sample", spy)
    out = main(["--steps", "2", "--batch-size", "4", "--layers", "1", "--hidden", "32",
                "--heads", "2", "--log-every", "2", "--tasks", "detect_all_pair=1",
                "--rows", "features", "--by-length", "4", "--by-length-task",
                "detect_all_pair"])
    assert 0 <= out["first_region_acc_n4"] <= 1
    assert set(asked) == {"detect_all_pair"} and len(asked) == 8 + 256


def test_learning_rate_warms_up_then_falls_on_a_cosine_in_the_last_phase():
    from benchmarks.probe_lookup import learning_rate

    assert learning_rate(1e-3, 5, 0, 10, 0, 100) == 5e-4  # warm-up
    assert learning_rate(1e-3, 90, 0, 10, 0, 100) == 1e-3  # constant without --cosine-last
    assert learning_rate(1e-3, 60, 0, 10, 40, 100) == 1e-3  # before the last phase
    assert learning_rate(1e-3, 61, 0, 10, 40, 100) == 1e-3  # the cosine's first step
    assert math.isclose(learning_rate(1e-3, 81, 0, 10, 40, 100), 5e-4)
    assert 0 < learning_rate(1e-3, 100, 0, 10, 40, 100) < 1e-5
    assert learning_rate(1e-3, 61, 60, 10, 40, 100) == 1e-4  # a phase's own warm-up too


def test_saved_state_loads_back(tmp_path):
    small = ["--batch-size", "4", "--layers", "1", "--hidden", "32", "--heads", "2",
             "--log-every", "1", "--tasks", "detect_all_pair=1", "--rows", "features"]
    first, again = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    main(["--steps", "2", "--save-state", first] + small)
    main(["--steps", "1", "--lr", "0", "--load-state", first, "--save-state", again] + small)
    a, b = torch.load(first), torch.load(again)
    assert set(a) == {"model", "features"}
    for part in a:
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])  # lr 0: unchanged
    c = str(tmp_path / "c.pt")
    main(["--steps", "1", "--load-state", first, "--save-state", c] + small)
    assert not all(torch.equal(a["model"][k], torch.load(c)["model"][k]) for k in a["model"])
