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
