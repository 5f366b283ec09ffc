"""General VQA without regions (paper stage 2's data against forgetting; spec §3.2 "If there
are no boxes the region line is omitted"): box-less records, samples, mixed batches, the
pipeline answering ``vqa`` from the image alone (the LLaVA converter: test_training_converters)."""
import json

import numpy as np
import pytest
import torch
from training_fixtures import make_record

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.prompts import TASKS, task_parts
from vlxseek_core.tokens import IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID
from vlxseek_core.training.records import TrainingRecord

QUESTION = "what colour is it?"


# ------------------------------------------------------------------------------ records

def test_boxless_vqa_record_round_trip():
    rec = TrainingRecord("q1", "a.png", "vqa", QUESTION, "red.")
    obj = rec.to_json()
    assert obj["bbox_list"] == []
    assert obj["conversations"][0] == {"from": "human", "value": "<image>\n" + QUESTION}
    assert TrainingRecord.from_json(obj) == rec
    assert TrainingRecord.from_json(json.dumps(obj)) == rec
    del obj["bbox_list"]  # the reference's general VQA lines have no bbox_list
    assert TrainingRecord.from_json(obj) == rec


@pytest.mark.parametrize("task", sorted(t for t in TASKS if not TASKS[t].runs_without_regions))
def test_boxless_records_of_other_tasks_are_refused(task):
    record = make_record(task, boxes=[])
    with pytest.raises(InvalidRequestError) as err:
        TrainingRecord.from_json(record)
    assert str(err.value) == (f"record '{task}-0': field 'bbox_list': task {task!r} needs 1 to "
                              "100 boxes, got 0 (only vqa may have none)")
    del record["bbox_list"]
    with pytest.raises(InvalidRequestError, match=r"record '.*': missing field\(s\) "
                                                  r"\['bbox_list'\]"):
        TrainingRecord.from_json(record)


@pytest.mark.parametrize("change,field", [
    (dict(answer="it is <region0>"), "answer"),
    (dict(human="<image>" + QUESTION), "conversations"),
    (dict(human=QUESTION + "\n<image>"), "conversations"),
    (dict(bbox_list=None), "bbox_list"),
])
def test_boxless_vqa_record_errors_name_the_field(change, field):
    obj = TrainingRecord("q1", "a.png", "vqa", QUESTION, "red.").to_json()
    if "answer" in change:
        obj["conversations"][1]["value"] = change["answer"]
    if "human" in change:
        obj["conversations"][0]["value"] = change["human"]
    if "bbox_list" in change:
        obj["bbox_list"] = change["bbox_list"]
    with pytest.raises(InvalidRequestError, match=f"record 'q1': field '{field}"):
        TrainingRecord.from_json(obj)


# ------------------------------------------------------------------------------ samples

def test_boxless_sample_prompt_and_labels(builder):
    record = make_record("vqa", boxes=[])
    sample = builder.build(record)
    ids, labels = sample.input_ids.tolist(), sample.labels.tolist()
    prompt = builder.prompt_tokenizer.build(task_parts("vqa", record["query"]), 0)
    answer = builder.answer_ids(record["conversations"][1]["value"])
    assert ids == prompt + answer
    assert labels == [-100] * len(prompt) + answer  # the loss covers the answer only
    assert ids.count(IMAGE_PLACEHOLDER_ID) == 1 and REGION_FEATURE_PLACEHOLDER_ID not in ids
    at = ids.index(IMAGE_PLACEHOLDER_ID)
    assert ids[at + 1:at + 3] == [151653, 198]  # <|vision_end|> "\n", then the question
    assert tuple(sample.image.aux_boxes.shape) == (0, 4) == tuple(sample.image.vt_boxes.shape)


def test_plain_llava_record_builds_like_a_vqa_record(builder):
    llava = {"id": "l1", "image": "img0.png", "conversations": [
        {"from": "human", "value": "<image>\n" + QUESTION}, {"from": "gpt", "value": "red."}]}
    vqa = make_record("vqa", boxes=[])
    vqa["conversations"][1]["value"] = "red."
    assert torch.equal(builder.build(llava).input_ids, builder.build(vqa).input_ids)


@pytest.mark.parametrize("record,message", [
    (make_record("detect", boxes=[]), "field 'bbox_list': task 'detect' needs at least one box"),
    ({"id": "l2", "image": "img0.png", "conversations": [
        {"from": "human", "value": "<image>\nwhere?"},
        {"from": "gpt", "value": "<region0>"}]}, "answer refers to regions"),
])
def test_sample_builder_refuses_boxless_region_records(builder, record, message):
    with pytest.raises(InvalidRequestError, match=message):
        builder.build(record)


# -------------------------------------------------------------------------------- model

def _stage2_model(train_model_dir, builder):
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.freezing import apply_stage
    from vlxseek_core.training.model import TrainingModel

    vlm, _ = load_model(train_model_dir)
    vlm.train()
    apply_stage(vlm, 2, builder.prompt_tokenizer.tokenizer)
    return vlm, TrainingModel(vlm)


def test_mixed_batch_forward_backward(train_model_dir, builder):
    """One sample with boxes, one without: finite loss and gradients, equal to the mean of
    the single-sample losses (the box-less sample does not disturb the other)."""
    from vlxseek_core.training.samples import collate_samples

    vlm, model = _stage2_model(train_model_dir, builder)
    samples = [builder.build(make_record("detect", "img0.png")),
               builder.build(make_record("vqa", "img2.png", boxes=[]))]
    out = model(**collate_samples(samples))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = {n: p.grad for n, p in vlm.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "mm_projector_aux" in n)
    with torch.no_grad():
        singles = [float(model(**collate_samples([s]))["loss"]) for s in samples]
    assert float(out["loss"].detach()) == pytest.approx(np.mean(singles), rel=1e-4)


def test_boxless_batch_keeps_the_region_path_in_the_graph(train_model_dir, builder):
    """A batch without any box still gives every trainable parameter a (zero) gradient: the
    trainer's DDP runs with find_unused_parameters=False."""
    from vlxseek_core.training.samples import collate_samples

    vlm, model = _stage2_model(train_model_dir, builder)
    batch = collate_samples([builder.build(make_record("vqa", f"img{i}.png", boxes=[]))
                             for i in range(2)])
    model(**batch)["loss"].backward()
    missing = [n for n, p in vlm.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    for name, p in vlm.named_parameters():
        if name.startswith(("model.vision_tower_aux.", "model.object_vp_extractor.",
                            "model.mm_projector_aux.")):
            assert not p.grad.any(), name


# ----------------------------------------------------------------------------- pipeline

NOT_RUN = "the model was not run"


@pytest.fixture(scope="module")
def nothing_found(tiny_model_dir):
    """The tiny pipeline with a detector that never finds anything."""
    from vlxseek_core.pipeline import VLXSeek
    from vlxseek_core.proposals import ProposalSource
    from vlxseek_core.types import Proposals

    class NothingFound(ProposalSource):
        name = "nothing"

        def propose(self, image):
            return Proposals.empty()

    base = VLXSeek.from_pretrained(tiny_model_dir, device="cpu", proposal_source="none")
    return VLXSeek(base.model, base.tokenizer, base.preprocessor, NothingFound(),
                   max_new_tokens=6)


def _ran(res):
    return (res.num_generated_tokens > 0 and "generate" in res.timings_ms
            and not any(NOT_RUN in w for w in res.warnings))


def test_vqa_without_regions_runs_on_the_image(tiny_pipeline, astronaut):
    res = tiny_pipeline.query(astronaut, "what colour is the cat?", task="vqa",
                              max_new_tokens=6, reuse_frame=False)
    assert _ran(res) and len(res.proposals) == 0 and res.detections == []
    assert res.prompt_text == "what colour is the cat?"
    # region-answer tasks on a frame without regions are still not run
    from vlxseek_core.types import Proposals

    res = tiny_pipeline.query(astronaut, "cat", task="detect", proposals=Proposals.empty())
    assert res.answer == "" and any(NOT_RUN in w for w in res.warnings)
    # without a detector a detect query still needs boxes, also after a cached vqa frame
    tiny_pipeline.query(astronaut, "what is it?", task="vqa", max_new_tokens=2)
    with pytest.raises(InvalidRequestError, match="no proposal detector"):
        tiny_pipeline.query(astronaut, "cat", task="detect")
    with pytest.raises(InvalidRequestError, match="no proposal detector"):
        tiny_pipeline.query_many(astronaut, [("what?", "vqa"), ("cat", "detect")])


def test_detector_finding_nothing(nothing_found, astronaut):
    """detect first (not run, frame cached without its image), then vqa on the same frame
    encodes the image and runs; detect again is still not run."""
    first = nothing_found.query(astronaut, "cat", task="detect")
    assert any(NOT_RUN in w for w in first.warnings) and "encode" not in first.timings_ms
    res = nothing_found.query(astronaut, QUESTION, task="vqa")
    assert _ran(res) and "encode" in res.timings_ms
    both = nothing_found.query_many(astronaut, [(QUESTION, "vqa"), ("cat", "detect")])
    assert _ran(both[0]) and any(NOT_RUN in w for w in both[1].warnings)
    enc = nothing_found.encode(astronaut, reuse_frame=False)
    assert enc.frame is not None and len(enc.proposals) == 0
    assert _ran(nothing_found.answer(enc, QUESTION, task="vqa"))
