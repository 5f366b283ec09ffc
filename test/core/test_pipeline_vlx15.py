"""The pipeline on a tiny VLX-Seek 1.5 checkpoint in the real format (issue 12 items 1, 2, 5):
``VLXSeek.from_pretrained`` unchanged, every 1.5 template task, caller indices everywhere (also
with ``mm_bbox_order_mode: raster``), constrained decoding with ``<objK>``, rejections, frame and
prefix cache (the hybrid model's recurrent state included), ``query_many``, streaming."""
import numpy as np
import pytest
import torch

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.families.vlx_seek_1_5.box_order import OBJ_TOKENS, BoxOrder
from vlxseek_core.parsing import parse_answer
from vlxseek_core.types import Proposals
from vlx15_fixtures import scripted_processor

RASTER = (3, 2, 0, 1)
"""Raster order of the astronaut boxes (x1 = 170, 370, 150, 0): model box m = caller RASTER[m]."""


@pytest.fixture(scope="module")
def raster_pipeline(tiny15_raster_dir):
    from vlxseek_core.pipeline import VLXSeek

    return VLXSeek.from_pretrained(tiny15_raster_dir, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=24)


def test_detect_answers_in_caller_indices(tiny15_pipeline, astronaut, astronaut_boxes):
    res = tiny15_pipeline.query(astronaut, "person; flag", task="detect",
                                boxes=astronaut_boxes, reuse_frame=False)
    assert res.prompt_text == "Detect all the instances of: person; flag."
    parsed = parse_answer(res.answer, len(astronaut_boxes), OBJ_TOKENS)
    assert parsed.dropped_indices == [] and parsed.malformed == []  # constrained: well-formed
    assert [(d.label, d.region_index) for d in res.detections] == [
        (g.phrase, i) for g in parsed.groundings for i in g.region_indices]
    assert res.detections, res.answer  # seed 0 grounds a region (exercises the mapping)
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index]) and det.score == 1.0
    assert {"proposals", "preprocess", "encode", "prefill_prefix", "generate"} <= \
        set(res.timings_ms)


@pytest.mark.parametrize("task, text, indices, prompt", [
    ("refer", "the helmet", None, "Detect a single instance of: the helmet."),
    ("count", "flags", None, "Find and count all flags in the image. Provide the object "
     "indexes along with the total number."),
    ("caption", "", None, "Give a brief description of <obj0><obj1><obj2><obj3>."),
    ("ocr", "", [2], "Please provide the ocr results of <obj2> in the image."),
    ("vqa", "What is <obj1> holding?", None, "What is <obj1> holding?"),
    ("reason", "the flag", None, None),
])
def test_every_template_task_runs(tiny15_pipeline, astronaut, astronaut_boxes, task, text,
                                  indices, prompt):
    res = tiny15_pipeline.query(astronaut, text, task=task, boxes=astronaut_boxes,
                                region_indices=indices, max_new_tokens=8)
    if prompt is not None:
        assert res.prompt_text == prompt
    else:
        assert res.prompt_text.endswith("Find the following in this picture: the flag.")
    assert res.num_generated_tokens >= 1 and res.task == task
    if task == "count":
        assert isinstance(res.count, int)
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index])


def test_raster_order_results_use_caller_indices(raster_pipeline, tiny15_pipeline, astronaut,
                                                 astronaut_boxes):
    """Same weights: a raster checkpoint asked with caller boxes = the ``none`` checkpoint asked
    with the boxes already in raster order, indices mapped model → caller."""
    order = BoxOrder(astronaut_boxes.astype(np.float64), RASTER)
    sorted_boxes = astronaut_boxes[list(RASTER)]
    for task, text, caller_idx in (("detect", "person; flag", None), ("refer", "face", None),
                                   ("caption", "", [1])):
        got = raster_pipeline.query(astronaut, text, task=task, boxes=astronaut_boxes,
                                    region_indices=caller_idx, max_new_tokens=16)
        model_idx = None if caller_idx is None else [RASTER.index(i) for i in caller_idx]
        want = tiny15_pipeline.query(astronaut, text, task=task, boxes=sorted_boxes,
                                     region_indices=model_idx, max_new_tokens=16)
        assert got.answer == order.answer_to_caller(want.answer), task
        assert sorted((d.label, d.region_index) for d in got.detections) == sorted(
            (d.label, RASTER[d.region_index]) for d in want.detections)
        for det in got.detections:
            assert np.array_equal(det.box, astronaut_boxes[det.region_index])
        if task == "detect":
            assert got.detections, got.answer
    # the question names caller box 1, the model reads the model-side <obj3>
    enc = raster_pipeline.encode(astronaut, astronaut_boxes)
    req = raster_pipeline.prompts.request("caption", "", [1], enc)
    assert req.prompt_text == "Give a brief description of <obj1>."
    assert "Give a brief description of <obj3>." in req.context[0]


def test_scripted_answers_map_model_indices_to_caller_boxes(raster_pipeline, astronaut,
                                                            astronaut_boxes, monkeypatch):
    import vlxseek_core.pipeline as pipeline_module

    answer = "<ground>face</ground><objects><obj2><obj0></objects>"  # model-side
    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor",
                        scripted_processor(raster_pipeline.tokenizer, answer))
    res = raster_pipeline.query(astronaut, "face", task="detect", boxes=astronaut_boxes)
    assert res.answer == "<ground>face</ground><objects><obj0><obj3></objects>"
    assert [(d.label, d.region_index) for d in res.detections] == [("face", 0), ("face", 3)]
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index])
    rejection = "<ground>knife</ground><objects>None</objects>0"
    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor",
                        scripted_processor(raster_pipeline.tokenizer, rejection))
    res = raster_pipeline.query(astronaut, "knife", task="count", boxes=astronaut_boxes)
    assert res.answer == rejection and res.rejected == ["knife"] and res.detections == []
    assert res.count == 0 and "absent: 'knife' (the model answered None)" in res.warnings


def test_constrained_decoding_names_only_shown_obj_tokens(tiny15_pipeline, astronaut,
                                                          astronaut_boxes, monkeypatch):
    """The model 'wants' <obj7> of 2 boxes and <region0> (VLM-FO1's spelling): the <objK>
    constraint allows neither."""
    import vlxseek_core.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor",
                        scripted_processor(
                            tiny15_pipeline.tokenizer,
                            "<ground>x</ground><objects><obj7><region0></objects>"))
    res = tiny15_pipeline.query(astronaut, "x", task="detect", boxes=astronaut_boxes[:2],
                                max_new_tokens=10)
    parsed = parse_answer(res.answer, 2, OBJ_TOKENS)
    assert parsed.dropped_indices == [] and parsed.malformed == []
    assert all(int(k) < 2 for k in OBJ_TOKENS.pattern.findall(res.answer)), res.answer


def _tensors(cache):
    """Every tensor of a transformers cache (attention KV, conv and recurrent states)."""
    out = []
    for layer in cache.layers:
        for value in vars(layer).values():
            values = value.values() if isinstance(value, dict) else [value]
            out += [v.clone() for v in values if isinstance(v, torch.Tensor)]
    return out


@torch.no_grad()
def plain_answer(pipe, enc, text, task, budget):
    """The answer without any prefix cache: the whole prompt prefilled by ``generate``."""
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor

    req = pipe.prompts.request(task, text, list(range(len(enc.proposals)))
                               if pipe.tasks[task].needs_regions else [], enc)
    key, suffix = pipe.prompts.prompt_ids(req, enc)
    ids = pipe.prompts.prefix_ids(key, enc) + suffix
    embeds, positions, _ = pipe.model.build_inputs_embeds(ids, enc.frame)
    processors = [RegionAnswerLogitsProcessor(
        pipe.tokenizer, len(enc.proposals), trailing_text=task == "count", max_new_tokens=budget,
        **pipe.prompts.constraint_options)] if pipe.tasks[task].region_answer else None
    out = pipe.model.generate(
        inputs_embeds=embeds, position_ids=positions,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), max_new_tokens=budget,
        do_sample=False, num_beams=1, eos_token_id=pipe.end_ids, pad_token_id=pipe.end_ids[-1],
        logits_processor=processors, temperature=None, top_p=None, top_k=None,
        repetition_penalty=None)
    return req.clean(pipe.tokenizer.decode(out[0].tolist(), skip_special_tokens=False))


def test_prefix_cache_reuse_equals_fresh_answers(tiny15_pipeline, astronaut, astronaut_boxes):
    """Issue 12 item 5: the hybrid LLM's prefix cache carries gated-delta-net state; answers on
    the cached prefix (deep copies) equal a plain prefill of the whole prompt and a fresh
    frame, and the cached state never changes."""
    from vlxseek_core.families.vlx_seek_1_5.family import PREFIX_KEY

    pipe = tiny15_pipeline
    questions = [("person; flag", "detect"), ("the helmet", "refer"), ("flags", "count"),
                 ("What is this?", "vqa"), ("", "caption")]
    fresh = [pipe.query(astronaut, t, task=k, boxes=astronaut_boxes, reuse_frame=False,
                        max_new_tokens=12) for t, k in questions]
    enc = pipe.encode(astronaut, astronaut_boxes)
    assert [plain_answer(pipe, enc, t, k, 12) for t, k in questions] == \
        [r.answer for r in fresh]
    first = pipe.answer(enc, *questions[0], user_boxes=True, max_new_tokens=12)
    ids, cache = enc.prefixes[PREFIX_KEY]
    assert len(cache.layers) == 4 and type(cache.layers[0]).__name__ == "LinearAttentionLayer"
    before = _tensors(cache)
    again = [pipe.answer(enc, t, k, user_boxes=True, max_new_tokens=12) for t, k in questions]
    again.append(pipe.answer(enc, *questions[0], user_boxes=True, max_new_tokens=12))
    assert [r.answer for r in again] == [r.answer for r in fresh] + [fresh[0].answer]
    assert first.answer == fresh[0].answer
    assert [r.num_generated_tokens for r in again[:-1]] == [r.num_generated_tokens
                                                            for r in fresh]
    after = _tensors(enc.prefixes[PREFIX_KEY][1])
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))
    assert "prefill_prefix" not in again[1].timings_ms  # the cached prefix was used
    assert list(enc.prefixes) == [PREFIX_KEY]  # no system turn: one prefix for every task


def test_prompt_ids_are_the_reference_ids(tiny15_pipeline, astronaut, astronaut_boxes):
    """Prefix + suffix = one tokenization of the whole prompt (spec §1.6), for boxes and VQA."""
    from vlxseek_core.families.vlx_seek_1_5.expansion import (expand_placeholders,
                                                              tokenize_prompt)
    from vlxseek_core.families.vlx_seek_1_5.prompts import prepare_request

    pipe = tiny15_pipeline
    for boxes, task, text in ((astronaut_boxes, "detect", "cat"),
                              (astronaut_boxes, "caption", ""), (None, "vqa", "Why?")):
        indices = [0, 2] if task == "caption" else []
        enc = (pipe.encode(astronaut, boxes) if boxes is not None
               else pipe.encode(astronaut, proposals=Proposals.empty()))
        req = pipe.prompts.request(task, text, indices, enc)
        key, suffix = pipe.prompts.prompt_ids(req, enc)
        assert key is not None
        n = 0 if boxes is None else len(boxes)
        ref = prepare_request(task, text, boxes, (512, 512), "none", indices)
        grid = enc.frame.image_grid_thw
        want = expand_placeholders(tokenize_prompt(ref.prompt, pipe.tokenizer), pipe.tokenizer,
                                   grid, n).input_ids
        assert pipe.prompts.prefix_ids(key, enc) + suffix == want


def test_query_many_encodes_once(tiny15_pipeline, astronaut, astronaut_boxes):
    pipe = tiny15_pipeline
    specs = [("person", "detect"), ("flags", "count"), ("", "caption")]
    many = pipe.query_many(astronaut, specs, boxes=astronaut_boxes, max_new_tokens=8,
                           reuse_frame=False)
    single = [pipe.query(astronaut, t, task=k, boxes=astronaut_boxes, max_new_tokens=8,
                         reuse_frame=False) for t, k in specs]
    assert [r.answer for r in many] == [r.answer for r in single]
    assert "encode" in many[0].timings_ms and "encode" not in many[1].timings_ms


def test_region_indices_for_a_non_region_task_are_refused(tiny15_pipeline, astronaut,
                                                          astronaut_boxes, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("model work before the request was checked")

    monkeypatch.setattr(tiny15_pipeline, "_encode_frame", boom)
    with pytest.raises(InvalidRequestError, match="region_indices are for"):
        tiny15_pipeline.query(astronaut, "cat", task="detect", boxes=astronaut_boxes,
                              region_indices=[1], reuse_frame=False)
    with pytest.raises(InvalidRequestError, match="control token '<\\|im_end\\|>'"):
        tiny15_pipeline.query(astronaut, "cat<|im_end|>", boxes=astronaut_boxes,
                              reuse_frame=False)
    with pytest.raises(InvalidRequestError, match="region_indices"):
        tiny15_pipeline.query(astronaut, task="ocr", boxes=astronaut_boxes[:2],
                              region_indices=[5], reuse_frame=False)


def test_without_regions_only_vqa_runs(tiny15_pipeline, astronaut):
    vqa = tiny15_pipeline.query(astronaut, "What is this?", task="vqa", max_new_tokens=6)
    assert vqa.num_generated_tokens >= 1 and len(vqa.proposals) == 0
    res = tiny15_pipeline.query(astronaut, "cat", proposals=Proposals.empty())
    assert res.answer == "" and any("no regions" in w for w in res.warnings)


def test_external_proposals_are_the_caller_indices(raster_pipeline, astronaut, astronaut_boxes):
    scores = np.float32([0.9, 0.8, 0.7, 0.6])
    res = raster_pipeline.query(astronaut, "person", proposals=Proposals(astronaut_boxes,
                                                                         scores),
                                max_new_tokens=16)
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index])
        assert det.score == pytest.approx(float(scores[det.region_index]))


def test_streamed_text_is_in_caller_indices(raster_pipeline, astronaut, astronaut_boxes):
    from vlxseek_core.streaming import QueryProgress

    texts = []
    progress = QueryProgress(on_token=lambda text, n: texts.append(text))
    res = raster_pipeline.query(astronaut, "person; flag", boxes=astronaut_boxes,
                                progress=progress, max_new_tokens=16)
    assert texts and texts[-1] == res.answer


def test_bf16_pipeline(tiny15_dir, astronaut, astronaut_boxes):
    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(tiny15_dir, device="cpu", dtype="bfloat16",
                                   proposal_source="none", max_new_tokens=6)
    res = pipe.query(astronaut, "person", boxes=astronaut_boxes)
    assert res.num_generated_tokens >= 1
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index])
