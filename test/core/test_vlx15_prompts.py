"""VLX-Seek 1.5 prompt/answer layer (spec vlx-seek-1.5 §1.5, §1.6, §4): verbatim templates,
prompt strings, reference tokenization and placeholder expansion, box order and index remapping,
the shared parser and constrained decoding with ``<objK>`` tokens."""
import functools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from vlxseek_core.decoding import RegionAnswerLogitsProcessor
from vlxseek_core.errors import CheckpointError, InvalidRequestError
from vlxseek_core.families.vlx_seek_1_5 import prompts as p15
from vlxseek_core.families.vlx_seek_1_5.box_order import (OBJ_TOKENS, box_order, prepare_boxes,
                                                          remap_index_tokens, validate_boxes)
from vlxseek_core.parsing import parse_answer, read_count

EN = {
    "detection": "Detect all the instances of: {}.",
    "grounding_single": "Detect a single instance of: {}.",
    "counting": "Find and count all {} in the image. Provide the object indexes along with the "
                "total number.",
    "brief_region_caption": "Give a brief description of {}.",
    "region_ocr": "Please provide the ocr results of {} in the image.",
    "reasoning_detection":
        "First thinks about the reasoning process in the mind and then provides the user with "
        "the answer. The reasoning process and answer are enclosed within <think> </think> and "
        "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
        "<answer> answer here </answer>.\nFor the reasoning process, analyze each object in the "
        "image related to the question and identify the correct objects that correspond to the "
        "target label.\nFind the following in this picture: {}.",
}
ZH = {
    "detection": "识别每个：{}。",
    "grounding_single": "检测单个目标：{}。",
    "counting": "在图片中识别并计数： {}。返回目标数量以及索引。",
    "brief_region_caption": "给出这些区域的简要描述：{}。",
    "region_ocr": "请提供该区域内的 OCR 结果：{}。",
    "reasoning_detection":
        "首先思考思维过程，然后向用户提供答案。思维过程和答案分别用 <think>   </think> 和 <answer>   "
        "</answer> 标签括起来，即 <think> 在这里写推理过程 </think><answer> 在这里写答案 </answer>。 "
        "对于推理过程，检查图像中与问题相关的所有对象，并确定符合目标标签的对象。在图像中识别{}。",
}
HEAD = "<|im_start|>user\n<|vision_start|><image><|vision_end|>\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"
VOCAB = 151936


@functools.lru_cache(maxsize=None)
def obj_tokenizer():
    """The FO1 test tokenizer plus ``<obj0>``…``<obj99>`` and ``<objfeat>`` as added tokens."""
    from tokenizers import AddedToken

    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    tok = build_qwen25_vl_tokenizer()
    extra = [f"<obj{i}>" for i in range(100)] + ["<objfeat>"]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra],
                   special_tokens=True)
    return tok


# ----------------------------------------------------------------------------- templates, tasks

def test_templates_are_verbatim():
    assert set(p15.TEMPLATES) == set(EN) | {"vqa"}
    for name in EN:
        assert p15.TEMPLATES[name].en == EN[name], name
        assert p15.TEMPLATES[name].zh == ZH[name], name
    assert "计数： {}" in p15.TEMPLATES["counting"].zh  # the space after the full-width colon
    assert p15.TEMPLATES["reasoning_detection"].en.count("\n") == 2
    assert "\n" not in p15.TEMPLATES["reasoning_detection"].zh
    assert "<think>   </think> 和 <answer>   </answer>" in ZH["reasoning_detection"]
    assert "</answer>。 对于" in ZH["reasoning_detection"]


@pytest.mark.parametrize("task,query,regions,lang,expected", [
    ("detect", " person ;cup ", (), "en", "Detect all the instances of: person; cup."),
    ("detect", ["person", " cup"], (), "zh", "识别每个：person; cup。"),
    ("detection", "dog", (), "en", "Detect all the instances of: dog."),
    ("refer", "the man in white", (), "en", "Detect a single instance of: the man in white."),
    ("count", "cats", (), "zh", "在图片中识别并计数： cats。返回目标数量以及索引。"),
    ("count", ["cat", "dog"], (), "en", EN["counting"].replace("{}", "cat; dog")),
    ("caption", "", (2, 3), "en", "Give a brief description of <obj2><obj3>."),
    ("ocr", "", (1,), "zh", "请提供该区域内的 OCR 结果：<obj1>。"),
    ("reason", "something to sit on", (), "en",
     EN["reasoning_detection"].replace("{}", "something to sit on")),
    ("reason", "坐的东西", (), "zh", ZH["reasoning_detection"].replace("{}", "坐的东西")),
    ("vqa", " What is <obj1> holding? ", (), "en", "What is <obj1> holding?"),
])
def test_task_questions(task, query, regions, lang, expected):
    assert p15.task_question(task, query, regions, num_boxes=4, language=lang) == expected


@pytest.mark.parametrize("task", ["caption_detailed", "ground", "visual_prompt", "detect_all",
                                  "segment"])
def test_tasks_without_a_template_name_the_task_and_the_supported_ones(task):
    with pytest.raises(InvalidRequestError) as err:
        p15.task_question(task, "x", num_boxes=1)
    message = str(err.value)
    assert repr(task) in message and "VLX-Seek 1.5" in message
    assert all(name in message for name in p15.PROJECT_TASKS)


@pytest.mark.parametrize("kwargs,words", [
    (dict(task="detect", query=""), "non-empty"),
    (dict(task="detect", query="cup<|im_end|>"), "<|im_end|>"),
    (dict(task="vqa", query="look <image> here"), "<image>"),
    (dict(task="vqa", query="<objfeat>?"), "<objfeat>"),
    (dict(task="caption", query=""), "region_indices"),
    (dict(task="caption", region_indices=[4]), "out of range"),
    (dict(task="detect", query="cup", region_indices=[0]), "region_indices"),
    (dict(task="detect", query="cup", language="de"), "language"),
    (dict(task="detect", query="cup", num_boxes=0), "at least one box"),
    (dict(task="detect", query="x" * 5000), "limit"),
])
def test_bad_requests_are_refused(kwargs, words):
    kwargs.setdefault("num_boxes", 4)
    with pytest.raises(InvalidRequestError) as err:
        p15.task_question(**kwargs)
    assert words in str(err.value)


def test_vqa_runs_without_boxes():
    assert p15.task_question("vqa", "Why?", num_boxes=0) == "Why?"


# ----------------------------------------------------------------------------- prompt strings

def test_prompt_with_boxes_and_box_less_vqa():
    question = "Detect all the instances of: person."
    assert p15.render_prompt(question, 3) == (
        HEAD + "<obj0><objfeat><obj1><objfeat><obj2><objfeat>\n" + question + TAIL)
    assert p15.render_prompt("What is this?", 0) == HEAD + "What is this?" + TAIL
    assert "system" not in p15.render_prompt(question, 1)


def test_prepare_request_maps_caller_indices_to_model_order():
    boxes = [[10, 10, 50, 50], [0, 0, 20, 20], [5, 5, 100, 100]]  # areas 1600, 400, 59²
    req = p15.prepare_request("caption", boxes=boxes, image_size=(64, 64),
                              order_mode="area_desc", region_indices=[1, 2])
    assert req.task == "brief_region_caption" and req.order.order == (2, 0, 1)
    assert req.question == "Give a brief description of <obj2><obj0>."
    assert req.prompt == (HEAD + "<obj0><objfeat><obj1><objfeat><obj2><objfeat>\n"
                          + req.question + TAIL)
    np.testing.assert_array_equal(req.order.model_boxes[0], [5, 5, 64, 64])
    with pytest.raises(InvalidRequestError, match="at most 2"):
        p15.prepare_request("detect", "cup", boxes, (64, 64), max_boxes=2)


# ----------------------------------------------------------------------------- ids (§1.6)

def test_reference_chunk_tokenization_and_expansion():
    tok = obj_tokenizer()
    prompt = p15.render_prompt("Detect all the instances of: person; cup.", 3)
    ids = p15.tokenize_prompt(prompt, tok)
    assert ids.count(-200) == 1 and ids.count(-300) == 3
    obj0 = tok.convert_tokens_to_ids("<obj0>")
    assert [ids[i - 1] - obj0 for i, t in enumerate(ids) if t == -300] == [0, 1, 2]
    chunks = [c for piece in prompt.split("<image>") for c in piece.split("<objfeat>")]
    assert [t for t in ids if t >= 0] == [
        t for c in chunks for t in tok(c, add_special_tokens=False)["input_ids"]]
    text = "".join("<image>" if t == -200 else "<objfeat>" if t == -300 else tok.decode([t])
                   for t in ids)
    assert text == prompt
    assert p15.object_token_count(tok) == 100

    out = p15.expand_placeholders(ids, tok, [[1, 4, 6]], 3)
    pad, feat = tok.convert_tokens_to_ids("<|image_pad|>"), tok.convert_tokens_to_ids("<objfeat>")
    assert (pad, feat) != (248056, 248181)  # read from the tokenizer, not the 10B constants
    assert out.image_token_counts == (6,) and out.num_object_tokens == 3
    assert out.input_ids.count(pad) == 6 and out.input_ids.count(feat) == 3
    assert len(out.input_ids) == len(ids) - 1 + 6 - 3 + 3
    assert -200 not in out.input_ids and -300 not in out.input_ids
    assert out.input_ids[ids.index(-200):ids.index(-200) + 6] == [pad] * 6

    with pytest.warns(UserWarning, match="dropped"):
        assert p15.expand_placeholders(ids, tok, [[1, 4, 6]], 5).input_ids == out.input_ids
    with pytest.raises(InvalidRequestError, match="3 <objfeat> tokens but only 2"):
        p15.expand_placeholders(ids, tok, [[1, 4, 6]], 2)
    with pytest.raises(InvalidRequestError, match="multiple of 4"):
        p15.expand_placeholders(ids, tok, [[1, 3, 3]], 3)
    with pytest.raises(InvalidRequestError, match="rows"):
        p15.expand_placeholders(ids, tok, [[1, 4, 6], [1, 2, 2]], 3)
    with pytest.raises(CheckpointError, match="<objfeat>"):
        from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer
        p15.expand_placeholders(ids, build_qwen25_vl_tokenizer(), [[1, 4, 6]], 3)


def test_box_less_prompt_expands_without_object_tokens():
    tok = obj_tokenizer()
    ids = p15.tokenize_prompt(p15.render_prompt("What is this?", 0), tok)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = p15.expand_placeholders(ids, tok, [[2, 4, 4]], 0)
    assert out.image_token_counts == (8,) and out.num_object_tokens == 0


# ----------------------------------------------------------------------------- boxes (§4.4)

def test_validation_clips_sorts_and_refuses_degenerate_boxes():
    got = validate_boxes([[50, -5, 10, 30], [-3.5, 70, 120, 90.5]], (100, 80))
    np.testing.assert_array_equal(got, [[10, 0, 50, 30], [0, 70, 100, 80]])
    assert got.dtype == np.float64
    with pytest.raises(InvalidRequestError, match=r"boxes\[1\].*zero width or height"):
        validate_boxes([[0, 0, 5, 5], [120, 10, 150, 20]], (100, 80))  # x clipped to 100..100
    with pytest.raises(InvalidRequestError, match=r"boxes\[0\].*non-finite"):
        validate_boxes([[0, 0, np.nan, 5]], (100, 80))
    with pytest.raises(InvalidRequestError, match=r"shape \[K, 4\]"):
        validate_boxes([[0, 0, 5]], (100, 80))
    with pytest.raises(InvalidRequestError, match=r"boxes\[1\].*zero width or height"):
        validate_boxes([[0, 0, 5, 5], [90, 90, 120, 130]], (100, 80))  # y clipped to 80..80
    assert validate_boxes(None, (10, 10)).shape == (0, 4)


def test_order_modes_with_ties():
    boxes = np.array([[5, 9, 7, 10], [5, 2, 9, 10], [1, 1, 3, 3], [0, 5, 2, 7]], dtype=float)
    # areas 2, 32, 4, 4
    assert box_order(boxes, "none") == (0, 1, 2, 3)
    assert box_order(boxes, "raster") == (3, 2, 1, 0)  # x first, then y, then caller index
    assert box_order(boxes, "area_asc") == (0, 2, 3, 1)
    assert box_order(boxes, "area_desc") == (1, 2, 3, 0)  # tie (2, 3) by caller index
    same = np.array([[0, 0, 2, 2]] * 3, dtype=float)
    for mode in ("raster", "area_asc", "area_desc"):
        assert box_order(same, mode) == (0, 1, 2)
    with pytest.raises(InvalidRequestError, match="mm_bbox_order_mode"):
        box_order(boxes, "random")


coords = st.integers(0, 40)
box_lists = st.lists(st.tuples(coords, coords, st.integers(1, 10), st.integers(1, 10)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(boxes=box_lists, mode=st.sampled_from(["none", "raster", "area_asc", "area_desc"]),
       indices=st.lists(st.integers(0, 15), max_size=8))
def test_remap_round_trip_and_order_keys(boxes, mode, indices):
    order = prepare_boxes(boxes, (60, 60), mode)
    n = len(boxes)
    assert sorted(order.order) == list(range(n))
    np.testing.assert_array_equal(order.model_boxes, order.caller_boxes[list(order.order)])
    b = order.model_boxes
    if mode == "raster":
        keys = list(zip(b[:, 0], b[:, 1], order.order))
        assert keys == sorted(keys)
    elif mode != "none":
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        sign = 1 if mode == "area_asc" else -1
        keys = list(zip(sign * area, order.order))
        assert keys == sorted(keys)
    text = "a " + " ".join(OBJ_TOKENS.token(i) for i in indices) + " <region1> <obj>"
    to_model = order.question_to_model(text)
    assert order.answer_to_caller(to_model) == text
    for i, tok in zip(indices, to_model[2:].split(" ")):
        assert tok == OBJ_TOKENS.token(order.caller_to_model[i] if i < n else i)


@settings(max_examples=150, deadline=None)
@given(boxes=box_lists, mode=st.sampled_from(["raster", "area_asc", "area_desc"]),
       data=st.data())
def test_remapped_answer_parses_to_caller_indices(boxes, mode, data):
    order = prepare_boxes(boxes, (60, 60), mode)
    n = len(boxes)
    found = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    extra = data.draw(st.integers(n, n + 5))  # out of range: unchanged, dropped
    model_side = "".join(f"<obj{order.caller_to_model[c]}>" for c in found)
    completion = (f"<ground>cup</ground>\n<objects>{model_side}<obj{extra}></objects>"
                  "<ground>knife</ground><objects>None</objects><|im_end|>")
    answer = p15.read_answer(completion, order)
    assert answer.parsed.groundings[0].phrase == "cup"
    assert answer.parsed.groundings[0].region_indices == sorted(found)
    assert answer.parsed.mentioned_indices == found
    assert answer.parsed.rejected == ["knife"] and answer.parsed.dropped_indices == [extra]
    assert answer.entries == tuple((c, "cup") for c in found)
    assert f"<obj{extra}>" in answer.text and "<|im_end|>" not in answer.text
    rows = p15.result_bbox_list(answer, order)
    assert [r["object_index"] for r in rows] == [f"<obj{c}>" for c in found]
    assert [[r["xmin"], r["ymin"], r["xmax"], r["ymax"]] for r in rows] == \
        order.caller_boxes[found].tolist()


def test_remap_leaves_unknown_and_huge_indices():
    assert remap_index_tokens("<obj1><obj01><obj7><obj" + "9" * 50 + ">", {1: 0}) == \
        "<obj0><obj0><obj7><obj" + "9" * 50 + ">"


# ----------------------------------------------------------------------------- parser (§4.5)

def test_shared_parser_reads_obj_tokens_and_rejection():
    text = ("<think><ground>x</ground><objects><obj9></objects></think>"
            "<ground> person </ground>  \n <objects><obj2><obj0><obj2></objects>"
            "<ground>小汽车</ground><objects> None </objects>3")
    parsed = parse_answer(text, 5, OBJ_TOKENS)
    pairs = [(g.phrase, g.region_indices) for g in parsed.groundings]
    assert pairs == [("x", []), ("person", [0, 2])]  # the block in <think> is read too
    assert parsed.rejected == ["小汽车"] and parsed.dropped_indices == [9]
    assert read_count(text, OBJ_TOKENS) == 3
    # the spellings do not mix: FO1's default parser ignores <objK>, and vice versa
    assert parse_answer(text, 5).region_indices == []
    assert parse_answer("<ground>a</ground><objects><region1></objects>", 3,
                        OBJ_TOKENS).region_indices == []
    bare = parse_answer("It is <obj1>.", 3, OBJ_TOKENS)
    assert [(g.phrase, g.region_indices) for g in bare.groundings] == [("<obj1>", [1])]
    rejection = p15.read_answer("<ground>knife</ground><objects>None</objects><|im_end|>",
                                prepare_boxes([[0, 0, 4, 4]], (8, 8)))
    assert rejection.parsed.groundings == [] and rejection.parsed.rejected == ["knife"]
    assert rejection.entries == () and rejection.count is None


# ----------------------------------------------------------------------------- decoding

def greedy(proc, wanted, im_end, seed=0):
    gen, ids = torch.Generator().manual_seed(seed), []
    for step in range(len(wanted) + 5):
        scores = torch.randn(1, VOCAB, generator=gen)
        scores[0, 151643:] += 3.0
        scores[0, wanted[min(step, len(wanted) - 1)]] = 100.0
        ids.append(int(proc(torch.tensor([ids], dtype=torch.long), scores).argmax()))
        if ids[-1] == im_end:
            break
    return ids


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 100), data=st.data())
def test_constrained_decoding_with_obj_tokens(n, data):
    tok = obj_tokenizer()
    conv = tok.convert_tokens_to_ids
    obj = [conv(f"<obj{k}>") for k in range(100)]
    proc = RegionAnswerLogitsProcessor(tok, n, region_tokens=[f"<obj{k}>" for k in range(100)],
                                       max_new_tokens=40)
    found = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 5),
                               unique=True))
    cup = tok("cup", add_special_tokens=False)["input_ids"]
    none = tok("None", add_special_tokens=False)["input_ids"]
    head = [conv("<ground>"), *cup, conv("</ground>"), conv("<objects>")]
    wanted = (head + [obj[k] for k in found] + [conv("</objects>")] + head + none
              + [conv("</objects>"), conv("<|im_end|>")])
    out = greedy(proc, wanted, conv("<|im_end|>"))
    assert out == wanted  # well-formed: unchanged, rejection included
    parsed = parse_answer(tok.decode(out), n, OBJ_TOKENS)
    assert parsed.groundings[0].region_indices == sorted(found) and parsed.rejected == []
    allowed = set(torch.nonzero(proc.allowed_ids(head, VOCAB)).flatten().tolist())
    assert allowed == set(obj[:n]) | {none[0]}
    # <regionK> and <objK ≥ n> are not index tokens here: the constraint replaces them
    bad = head + [conv("<region0>")] + ([obj[n]] if n < 100 else []) + [conv("<|im_end|>")]
    out = greedy(proc, bad, conv("<|im_end|>"))
    assert out[len(head)] in obj[:n] or out[len(head)] == none[0]


def test_missing_obj_tokens_are_a_checkpoint_error():
    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    with pytest.raises(CheckpointError, match="<obj0>"):
        RegionAnswerLogitsProcessor(build_qwen25_vl_tokenizer(), 2,
                                    region_tokens=["<obj0>", "<obj1>"])


# ----------------------------------------------------------------------------- generation

def test_generation_defaults():
    cli, predict = p15.GENERATION["cli"], p15.GENERATION["predict"]
    assert cli.generate_kwargs() == {"do_sample": False, "max_new_tokens": 2048,
                                     "repetition_penalty": 1.0}
    assert predict.generate_kwargs() == {"do_sample": True, "max_new_tokens": 512,
                                         "repetition_penalty": 1.0, "temperature": 0.2,
                                         "top_p": 1.0}
    assert cli.stop == predict.stop == "<|im_end|>"
