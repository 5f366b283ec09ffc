"""The KV cache under transformers' current name (``cache``; ``past_key_values`` before 5.24).

transformers 5.24 deprecates ``past_key_values`` in ``generate`` and the models' ``forward``
(``FutureWarning``) and in model outputs (a logged once-only warning); the pipeline must use the
new name, and its prompt-prefix cache must still give the answers of a plain generation.
"""
import copy
import logging
import warnings

import numpy as np
import pytest
import torch

from vlxseek_core.frames import StageTimer
from vlxseek_core.modeling import CACHE_KWARG, output_cache
from vlxseek_core.parsing import strip_end_tokens
from vlxseek_core.prompts import task_parts

BOXES = np.array([[80, 10, 160, 100], [180, 0, 256, 70], [0, 0, 256, 256]], np.float32)


@pytest.fixture(scope="module")
def small_astronaut(astronaut):
    return np.ascontiguousarray(astronaut[::2, ::2])


def _is_cache_deprecation(message: str) -> bool:
    return "past_key_values" in message or "cache_params" in message


def test_query_emits_no_cache_deprecation_warning(tiny_pipeline, small_astronaut, monkeypatch):
    logged = []
    # transformers' once-only logger warnings (cached per message: record every call here)
    monkeypatch.setattr(logging.Logger, "warning_once",
                        lambda self, *args, **kwargs: logged.append(str(args[0]) if args else ""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for task, text in [("detect", "person"), ("vqa", "what is this")]:
            # reuse_frame=False: a fresh frame, so the prompt prefix is prefilled again
            tiny_pipeline.query(small_astronaut, text, task=task, boxes=BOXES,
                                max_new_tokens=4, reuse_frame=False)
    deprecations = [str(w.message) for w in caught if _is_cache_deprecation(str(w.message))]
    assert deprecations == []
    assert [m for m in logged if _is_cache_deprecation(m)] == []


@pytest.mark.parametrize("task,text", [("detect", "person; flag"), ("vqa", "what is this")])
def test_prefix_cache_generation_equals_plain_generation(tiny_pipeline, small_astronaut, task,
                                                         text):
    """What the pipeline does (prefix KV cache, then ``generate`` on the whole prompt) gives
    the ids and scores of one ``generate`` call without any cache."""
    pipe = tiny_pipeline
    enc = pipe.encode(small_astronaut, BOXES)
    parts = task_parts(task, text, ())
    prefix_ids, prefix_cache = pipe._prefix(enc, pipe.prompt_tokenizer.wants_system_turn(parts),
                                            StageTimer())
    assert prefix_cache is not None and prefix_cache.get_seq_length() > 0
    ids = prefix_ids + pipe.prompt_tokenizer.build_suffix(parts)
    embeds, positions, _ = pipe.model.build_inputs_embeds(ids, enc.frame)
    common = dict(inputs_embeds=embeds, position_ids=positions,
                  attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                  max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=pipe.end_ids,
                  pad_token_id=pipe.end_ids[-1], temperature=None, top_p=None, top_k=None,
                  output_scores=True, return_dict_in_generate=True)
    before = prefix_cache.get_seq_length()
    with torch.inference_mode():
        cached = pipe.model.generate(**common, **{CACHE_KWARG: copy.deepcopy(prefix_cache)})
        plain = pipe.model.generate(**common)
    assert prefix_cache.get_seq_length() == before  # the stored prefix stays reusable
    assert cached.sequences.tolist() == plain.sequences.tolist()
    torch.testing.assert_close(torch.stack(cached.scores), torch.stack(plain.scores),
                               rtol=1e-4, atol=1e-4)
    if task == "vqa":  # no answer constraint: the pipeline's answer is that continuation
        res = pipe.query(small_astronaut, text, task=task, boxes=BOXES, max_new_tokens=12)
        generated = plain.sequences[0].tolist()
        assert res.num_generated_tokens == len(generated)
        assert res.answer == strip_end_tokens(pipe.tokenizer.decode(generated,
                                                                    skip_special_tokens=False))


def test_forward_takes_the_cache_under_both_names(tiny_pipeline):
    model = tiny_pipeline.model
    ids = torch.tensor([[151644, 872, 198, 9707, 11, 1879]])
    with torch.inference_mode():
        first = model(input_ids=ids[:, :-1], use_cache=True)
        cache = output_cache(first)
        assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1
        new = model(input_ids=ids[:, -1:], cache=copy.deepcopy(cache), use_cache=True)
        legacy = model(input_ids=ids[:, -1:], past_key_values=copy.deepcopy(cache),
                       use_cache=True)
        full = model(input_ids=ids, use_cache=False)
    torch.testing.assert_close(new.logits, legacy.logits)
    torch.testing.assert_close(new.logits[:, -1], full.logits[:, -1], rtol=1e-4, atol=1e-4)
    assert output_cache(new).get_seq_length() == ids.shape[1]
