"""Model families (issue 12 item 1): ``config.json``'s ``model_type`` selects the family; one
interface (``vlxseek_core.families``) holds everything family-specific; VLM-FO1 answers exactly
as before the split; shared core modules import family code only through the registry."""
import ast
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlxseek_core.errors import CheckpointError, InvalidRequestError
from vlxseek_core.families import (FAMILY_KEYS, MODEL_TYPES, FamilyPrompts, ModelFamily,
                                   family_for_model_type, family_of_checkpoint,
                                   family_of_model)

CORE = Path(__file__).resolve().parents[2] / "vlxseek_core"


def test_registry_maps_model_types_to_families():
    fo1 = family_for_model_type("omchat_qwen2_5_vl")
    v15 = family_for_model_type("vlx_seek_1_5")
    assert (fo1.name, fo1.model_type) == ("VLM-FO1", "omchat_qwen2_5_vl")
    assert (v15.name, v15.model_type) == ("VLX-Seek 1.5", "vlx_seek_1_5")
    for family in (fo1, v15):
        assert isinstance(family, ModelFamily)
        assert family_for_model_type(family.model_type) is family
    assert set(FAMILY_KEYS.values()) == set(MODEL_TYPES)
    assert fo1.index_tokens.token(3) == "<region3>" and v15.index_tokens.token(3) == "<obj3>"
    from vlxseek_core.prompts import TASKS

    assert dict(fo1.tasks) == dict(TASKS)
    assert set(v15.tasks) == {"detect", "refer", "count", "caption", "ocr", "reason", "vqa"}
    assert all(v15.tasks[t] is TASKS[t] for t in v15.tasks)
    assert (fo1.default_max_new_tokens, v15.default_max_new_tokens) == (1024, 2048)
    assert fo1.verbatim_eval_prompts and not v15.verbatim_eval_prompts


@pytest.mark.parametrize("model_type", ["llama", None, 3, "OMCHAT_QWEN2_5_VL"])
def test_unknown_model_type_lists_the_supported_ones(tmp_path, model_type):
    config = {} if model_type is None else {"model_type": model_type}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        family_of_checkpoint(str(tmp_path))
    message = str(info.value)
    assert "config.json" in message and "is not supported" in message
    assert "omchat_qwen2_5_vl (VLM-FO1)" in message and "vlx_seek_1_5 (VLX-Seek 1.5)" in message


def test_checkpoint_directory_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        family_of_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="no config.json"):
        family_of_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        family_of_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="JSONDecodeError"):
        family_of_checkpoint(str(tmp_path))


def test_unknown_model_type_through_from_pretrained_and_the_cli(tiny_model_dir, tmp_path,
                                                                capsys):
    from vlxseek_core.cli import main
    from vlxseek_core.pipeline import VLXSeek

    folder = tmp_path / "ckpt"
    folder.mkdir()
    config = json.loads(Path(tiny_model_dir, "config.json").read_text())
    config["model_type"] = "qwen2_5_vl"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type 'qwen2_5_vl' is not supported"):
        VLXSeek.from_pretrained(str(folder), device="cpu")
    assert main(["query", "--model", str(folder), "--image", "x.png", "--query", "cat",
                 "--proposal-source", "none", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlxseek: error: ") and "vlx_seek_1_5 (VLX-Seek 1.5)" in err


def test_checkpoints_select_their_family(tiny_model_dir, tiny15_dir, tiny_pipeline,
                                         tiny15_pipeline):
    assert family_of_checkpoint(tiny_model_dir).name == "VLM-FO1"
    assert family_of_checkpoint(tiny15_dir).name == "VLX-Seek 1.5"
    assert tiny_pipeline.family is family_of_model(tiny_pipeline.model)
    assert tiny15_pipeline.family is family_of_model(tiny15_pipeline.model)
    assert tiny15_pipeline.family.name == "VLX-Seek 1.5"
    assert isinstance(tiny15_pipeline.prompts, FamilyPrompts)
    assert tiny15_pipeline.prompt_tokenizer is None  # VLM-FO1's prompt tokenizer only
    assert tiny_pipeline.prompt_tokenizer is tiny_pipeline.prompts.prompt_tokenizer
    assert tiny15_pipeline.max_new_tokens == 24
    assert tiny15_pipeline.end_ids == [248046, 248044]  # <|im_end|>, <|endoftext|>


def test_tokenizer_checks_are_per_family(tiny_model_dir, tiny15_dir):
    fo1, v15 = (family_for_model_type(t) for t in ("omchat_qwen2_5_vl", "vlx_seek_1_5"))
    assert fo1.load_tokenizer(tiny_model_dir).convert_tokens_to_ids("<region0>") == 151665
    assert v15.load_tokenizer(tiny15_dir).convert_tokens_to_ids("<obj0>") == 248081
    with pytest.raises(CheckpointError, match=r"lacks the VLX-Seek 1.5 tokens .*<obj0>"):
        v15.load_tokenizer(tiny_model_dir)
    with pytest.raises(CheckpointError, match=r"lacks the VLM-FO1 tokens .*<region0>"):
        fo1.load_tokenizer(tiny15_dir)


def test_family_preprocessors(tiny_pipeline, tiny15_pipeline, astronaut):
    """VLM-FO1: the unchanged ImagePreprocessor. VLX-Seek 1.5: Qwen2-VL processor with patch 16
    and the spec's pixel budget, the original image / 255 as aux input, original-pixel boxes
    (spec vlx-seek-1.5 §2.1, §3.2)."""
    from vlxseek_core.preprocessing import ImagePreprocessor

    assert type(tiny_pipeline.preprocessor) is ImagePreprocessor
    pre = tiny15_pipeline.preprocessor
    assert (pre.qwen.patch_size, pre.qwen.merge_size) == (16, 2)
    assert (pre.qwen.size["shortest_edge"], pre.qwen.size["longest_edge"]) == (3136, 4194304)
    image = astronaut[:100, :150]
    boxes = np.float32([[10, 20, 60, 80], [70, 5, 140, 95]])
    out = pre(image, boxes)
    assert out.image_grid_thw.tolist() == [[1, 6, 10]]  # 100x150 -> 96x160 (spec §2.1)
    assert out.pixel_values.shape == (60, 1536)
    assert out.aux_pixel_values.shape == (1, 3, 100, 150)
    ref = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    assert (out.aux_pixel_values - ref).abs().max() < 1e-7
    assert torch.equal(out.aux_boxes, torch.from_numpy(boxes))
    scale = torch.tensor([160 / 150, 96 / 100] * 2)
    assert torch.allclose(out.vt_boxes, torch.from_numpy(boxes) * scale)
    big = pre(np.zeros((3000, 3000, 3), np.uint8), boxes)
    assert big.image_grid_thw.tolist() == [[1, 128, 128]]  # 2048 x 2048, no cap on aux
    assert big.aux_pixel_values.shape == (1, 3, 3000, 3000)


def test_raster_preprocessor_orders_the_region_inputs(tiny15_pipeline):
    from vlxseek_core.families.vlx_seek_1_5.preprocessing import VLXSeek15Preprocessor

    pre = VLXSeek15Preprocessor(tiny15_pipeline.preprocessor.qwen, "raster")
    boxes = np.float32([[50, 0, 60, 10], [5, 30, 20, 40], [5, 10, 20, 20]])
    out = pre(np.zeros((64, 64, 3), np.uint8), boxes)
    assert out.aux_boxes.tolist() == boxes[[2, 1, 0]].tolist()  # x1, then y1


def test_fo1_answers_as_the_unsplit_code_path(tiny_pipeline, astronaut, astronaut_boxes):
    """The pipeline's VLM-FO1 answer = the pre-family code path written out: the reference
    prompt ids (PromptTokenizer.build), no prefix cache, the same constrained greedy decoding."""
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor
    from vlxseek_core.parsing import strip_end_tokens
    from vlxseek_core.prompts import PromptTokenizer, task_parts

    pipe = tiny_pipeline
    for task, text in (("detect", "person; flag"), ("count", "flags"), ("vqa", "what?")):
        res = pipe.query(astronaut, text, task=task, boxes=astronaut_boxes, max_new_tokens=12,
                         reuse_frame=False)
        enc = pipe.encode(astronaut, astronaut_boxes, reuse_frame=False)
        ids = PromptTokenizer(pipe.tokenizer).build(task_parts(task, text), len(astronaut_boxes))
        with torch.no_grad():
            embeds, positions, _ = pipe.model.build_inputs_embeds(ids, enc.frame)
            processors = [RegionAnswerLogitsProcessor(
                pipe.tokenizer, len(astronaut_boxes), trailing_text=task == "count",
                max_new_tokens=12)] if task != "vqa" else None
            out = pipe.model.generate(
                inputs_embeds=embeds, position_ids=positions,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=pipe.end_ids,
                pad_token_id=pipe.end_ids[-1], logits_processor=processors, temperature=None,
                top_p=None, top_k=None, repetition_penalty=None)
        raw = pipe.tokenizer.decode(out[0].tolist(), skip_special_tokens=False)
        assert res.answer == strip_end_tokens(raw), task


def test_unsupported_tasks_of_a_family(tiny15_pipeline, astronaut, astronaut_boxes):
    for task in ("ground", "caption_detailed", "visual_prompt", "detect_all"):
        with pytest.raises(InvalidRequestError,
                           match=rf"task '{task}' is not supported by the VLX-Seek 1.5 family; "
                                 r"supported tasks: detect \(detection\)"):
            tiny15_pipeline.query(astronaut, "x", task=task, boxes=astronaut_boxes)


@pytest.mark.parametrize("which", ["fo1", "vlx15"])
def test_unknown_task_names_list_the_loaded_family_tasks(which, tiny_pipeline, tiny15_pipeline,
                                                         astronaut, astronaut_boxes):
    """A made-up task name, wherever it is given, is answered with the tasks this checkpoint's
    family can run (not every project task)."""
    pipe = tiny_pipeline if which == "fo1" else tiny15_pipeline
    listed = re.escape(", ".join(pipe.family.tasks)) + "$"
    enc = pipe.encode(astronaut, astronaut_boxes)
    calls = [
        ("task", lambda: pipe.query(astronaut, "x", task="bogus", boxes=astronaut_boxes)),
        ("task", lambda: pipe.query_many(astronaut, ["x"], task="bogus", boxes=astronaut_boxes)),
        (r"queries\[1\]\[1\]", lambda: pipe.query_many(astronaut, ["x", ("x", "bogus")],
                                                       boxes=astronaut_boxes)),
        ("task", lambda: pipe.answer(enc, "x", task="bogus")),
    ]
    for where, call in calls:
        with pytest.raises(InvalidRequestError,
                           match=rf"^{where}='bogus' is not a known task; known tasks: " + listed):
            call()
    if which == "vlx15":
        assert "ground" not in pipe.family.tasks  # sanity: the lists differ between families


def test_make_tiny_model_through_the_registry(tmp_path, capsys):
    from vlxseek_core.cli import main

    assert main(["make-tiny-model", str(tmp_path / "m"), "--family", "vlx_seek_1_5"]) == 0
    assert "VLX-Seek 1.5 checkpoint" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == \
        "vlx_seek_1_5"
    assert main(["make-tiny-model", str(tmp_path / "s"), "--family", "vlx_seek_1_5",
                 "--preset", "small"]) == 2
    assert "only the tiny preset" in capsys.readouterr().err


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_shared_core_reaches_families_only_through_the_registry():
    """Imports go one way: family modules may import the shared core; the shared inference
    modules (package top level, evaluation/, proposals/) import at most
    ``vlxseek_core.families`` itself."""
    offenders = []
    for path in [*CORE.glob("*.py"), *CORE.glob("evaluation/*.py"),
                 *CORE.glob("proposals/*.py")]:
        rel = path.relative_to(CORE)
        for name in _imports(path):
            if "families." in name or name.endswith(("vlx_seek_1_5", "vlm_fo1")):
                offenders.append(f"{rel}: {name}")
    assert offenders == []
    registry = (CORE / "families" / "__init__.py").read_text()
    assert "vlx_seek_1_5 import" not in registry and "from .vlm_fo1" not in registry


def test_family_files_stay_small():
    for path in [CORE / "pipeline.py", *(CORE / "families").rglob("*.py")]:
        assert len(path.read_text().splitlines()) <= 400, path
    assert os.path.isfile(CORE / "families" / "vlx_seek_1_5" / "family.py")


def test_split_modules_stay_small_and_keep_their_import_paths():
    """inspect_checkpoint and evaluation/common were split (report/files checks, the eval loop);
    both halves stay within the size guideline and the old import paths still give the same
    objects."""
    from vlxseek_core import inspect_checkpoint, inspect_report, validation
    from vlxseek_core.evaluation import common, runner

    for module in (inspect_checkpoint, inspect_report, common, runner, validation):
        assert len(Path(module.__file__).read_text().splitlines()) <= 400, module.__name__
    for name in ("InspectReport", "FAIL", "OK", "SKIP", "added_tokens", "compare_names",
                 "read_safetensors_header", "tokenizer_json_added_tokens"):
        assert getattr(inspect_checkpoint, name) is getattr(inspect_report, name), name
    for name in ("run_eval", "summarize", "format_summary"):
        assert getattr(common, name) is getattr(runner, name), name
    with pytest.raises(AttributeError):
        common.no_such_name  # noqa: B018 - the lazy re-export refuses other names
