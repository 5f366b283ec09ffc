"""Query progress: stages, token streaming and cancellation within one decoding step (issue 10
§7, the core half of the ROS ``~/query`` action)."""
import threading

import numpy as np
import pytest

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.streaming import QueryProgress

BOX = [[100, 40, 300, 260]]


def _image(seed):
    return np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def _recorder(cancel_at=None):
    events = {"stages": [], "tokens": []}
    progress = QueryProgress()

    def on_token(text, n):
        events["tokens"].append((text, n))
        if cancel_at is not None and n >= cancel_at:
            progress.cancel.set()

    progress.on_stage = events["stages"].append
    progress.on_token = on_token
    return progress, events


def test_stages_and_tokens_stream_the_same_answer(tiny_pipeline):
    img = _image(1)
    plain = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                                reuse_frame=False)
    progress, events = _recorder()
    streamed = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                                   progress=progress)
    assert streamed.answer == plain.answer and not streamed.cancelled
    assert events["stages"] == ["proposals", "encode", "generate"]
    counts = [n for _, n in events["tokens"]]
    assert counts == list(range(1, streamed.num_generated_tokens + 1))
    texts = [t for t, _ in events["tokens"]]
    assert all(b.startswith(a) or a.endswith("\ufffd") for a, b in zip(texts, texts[1:]))
    assert texts[-1] == streamed.answer
    # the frame is cached now: only decoding runs
    again, events2 = _recorder()
    tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12, progress=again)
    assert events2["stages"] == ["generate"]


@pytest.mark.parametrize("cancel_at", [1, 3])
def test_cancel_stops_within_one_decoding_step(tiny_pipeline, cancel_at):
    progress, events = _recorder(cancel_at=cancel_at)
    res = tiny_pipeline.query(_image(2), task="caption", boxes=BOX, max_new_tokens=40,
                              progress=progress)
    assert res.cancelled
    # transformers checks stopping criteria before it streams the step's token: the step
    # running when cancel is set is the last one
    assert cancel_at <= res.num_generated_tokens <= cancel_at + 1
    assert any("cancelled after" in w for w in res.warnings)
    assert not any("cut off" in w for w in res.warnings)
    assert res.answer == events["tokens"][-1][0]


def test_cancel_before_decoding_and_in_query_many(tiny_pipeline):
    progress = QueryProgress()
    progress.cancel.set()
    res = tiny_pipeline.query(_image(3), task="caption", boxes=BOX, progress=progress)
    assert res.cancelled and res.num_generated_tokens == 0 and res.answer == ""
    progress, _ = _recorder(cancel_at=2)
    many = tiny_pipeline.query_many(_image(4), [("", "caption"), ("", "caption")], boxes=BOX,
                                    max_new_tokens=20, progress=progress)
    assert [r.cancelled for r in many] == [True, True]
    assert many[0].num_generated_tokens in (2, 3) and many[1].num_generated_tokens == 0


def test_cancel_from_another_thread(tiny_pipeline):
    progress = QueryProgress()
    started = threading.Event()
    progress.on_token = lambda text, n: started.set()
    timer = threading.Thread(target=lambda: started.wait(30) and progress.cancel.set())
    timer.start()
    res = tiny_pipeline.query(_image(5), task="caption", boxes=BOX, max_new_tokens=200,
                              progress=progress)
    timer.join()
    assert res.cancelled and 1 <= res.num_generated_tokens < 200


@pytest.mark.parametrize("bad", [object(), threading.Event(), "progress"])
def test_progress_must_be_a_query_progress(tiny_pipeline, bad):
    with pytest.raises(InvalidRequestError, match="progress"):
        tiny_pipeline.query(_image(6), task="caption", boxes=BOX, progress=bad)


# ---------------------------------------------------------------- cancel between stages

def _count_calls(monkeypatch, obj, name, before=None):
    """Wrap ``obj.name``: the list returned grows by one per call; ``before()`` runs first."""
    calls, original = [], getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        if before is not None:
            before()
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def _fresh_answer(pipe, img, **kwargs):
    """The answer of a new pipeline (empty frame cache) on the same weights."""
    from vlxseek_core.pipeline import VLXSeek

    fresh = VLXSeek(pipe.model, pipe.tokenizer, pipe.preprocessor,
                    max_new_tokens=pipe.max_new_tokens)
    return fresh.query(img, **kwargs).answer


def _cancelled_before_decoding(res, img, pipe):
    assert res.cancelled and res.num_generated_tokens == 0 and res.answer == ""
    assert "cancelled before decoding" in res.warnings
    assert not any(w.startswith("no regions") or "cancelled after" in w for w in res.warnings)
    assert res.detections == [] and res.groundings == []
    assert np.array_equal(res.proposals.boxes, pipe.propose(img, BOX)[0].boxes)


def test_cancel_during_proposals_skips_the_towers_and_caches_nothing(tiny_pipeline, monkeypatch):
    img = _image(7)
    towers = _count_calls(monkeypatch, tiny_pipeline.model, "encode_frame")
    progress, events = _recorder()
    progress.on_stage = lambda name: (events["stages"].append(name),
                                      name == "proposals" and progress.cancel.set())
    res = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                              progress=progress)
    assert towers == [] and events["stages"] == ["proposals"] and events["tokens"] == []
    _cancelled_before_decoding(res, img, tiny_pipeline)
    # the half-done encoding is not cached: the next query encodes the frame and answers it
    again, events2 = _recorder()
    res2 = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                               progress=again)
    assert events2["stages"] == ["proposals", "encode", "generate"] and len(towers) == 1
    assert not res2.cancelled and res2.num_generated_tokens > 0
    assert res2.answer == _fresh_answer(tiny_pipeline, img, task="caption", boxes=BOX,
                                        max_new_tokens=12)
    # and that encoding is the cached one
    again, events3 = _recorder()
    runs = len(towers)  # the fresh pipeline ran them too
    assert tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                               progress=again).answer == res2.answer
    assert events3["stages"] == ["generate"] and len(towers) == runs


def test_cancel_during_proposals_in_query_many(tiny_pipeline, monkeypatch):
    img = _image(8)
    towers = _count_calls(monkeypatch, tiny_pipeline.model, "encode_frame")
    progress = QueryProgress(on_stage=lambda name: progress.cancel.set())
    many = tiny_pipeline.query_many(img, [("", "caption"), ("cup", "detect")], boxes=BOX,
                                    progress=progress)
    assert towers == []
    for res in many:
        _cancelled_before_decoding(res, img, tiny_pipeline)
    res = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12)
    assert not res.cancelled and res.num_generated_tokens > 0 and len(towers) == 1
    assert res.answer == _fresh_answer(tiny_pipeline, img, task="caption", boxes=BOX,
                                       max_new_tokens=12)


def test_cancel_during_the_towers_skips_the_prefill(tiny_pipeline, monkeypatch):
    img = _image(9)
    progress = QueryProgress()
    towers = _count_calls(monkeypatch, tiny_pipeline.model, "encode_frame",
                          before=progress.cancel.set)
    llm = _count_calls(monkeypatch, tiny_pipeline.model, "build_inputs_embeds")
    res = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                              progress=progress)
    assert towers == ["encode_frame"] and llm == []
    _cancelled_before_decoding(res, img, tiny_pipeline)
    # the complete encoding is cached: the next query only decodes
    again, events = _recorder()
    res2 = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                               progress=again)
    assert events["stages"] == ["generate"] and len(towers) == 1 and not res2.cancelled
    assert res2.answer == _fresh_answer(tiny_pipeline, img, task="caption", boxes=BOX,
                                        max_new_tokens=12)


def test_cancel_during_the_prefix_prefill_skips_generation(tiny_pipeline, monkeypatch):
    img = _image(10)
    progress, events = _recorder()
    # build_inputs_embeds runs first for the prompt prefix (then its prefill)
    prefill = _count_calls(monkeypatch, tiny_pipeline.model, "build_inputs_embeds",
                           before=progress.cancel.set)
    generate = _count_calls(monkeypatch, tiny_pipeline.model, "generate")
    res = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12,
                              progress=progress)
    assert len(prefill) == 1 and generate == []
    assert events["stages"] == ["proposals", "encode"] and events["tokens"] == []
    _cancelled_before_decoding(res, img, tiny_pipeline)
    # the prefix was complete and stays cached; the next query decodes normally
    res2 = tiny_pipeline.query(img, task="caption", boxes=BOX, max_new_tokens=12)
    assert not res2.cancelled and generate == ["generate"]
    assert res2.answer == _fresh_answer(tiny_pipeline, img, task="caption", boxes=BOX,
                                        max_new_tokens=12)
