"""Per task: the prompt text sent and the result parsed from a representative answer."""
import json

import numpy as np
import pytest

from vlxseek_core.pipeline import VLXSeek
from vlxseek_core.prompts import parts_to_text, task_parts
from vlxseek_core.types import Proposals, QueryResult

BOXES = np.array([[0, 0, 10, 10], [5, 5, 25, 25], [30, 0, 40, 8], [2, 2, 4, 4]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.6], np.float32)

CASES = [
    # task, query, regions, prompt text, answer, (phrase, index) pairs, count, extras
    ("detect", "person; cup", (), "Please detect person; cup in this image. Answer the "
     "question with object indexes.",
     "<ground>person</ground><objects><region0><region2></objects><ground>cup</ground>"
     "<objects><region3></objects>", [("person", 0), ("person", 2), ("cup", 3)], None, {}),
    ("refer", "the small box", (), "Please detect the small box in this image. Answer the "
     "question with object indexes.",
     "<ground>the small box</ground><objects><region3></objects>", [("the small box", 3)],
     None, {}),
    ("count", "boxes", (), "How many boxes are there in this image? Count each instance of "
     "the target object. Locate them with object indexes and then answer the question with "
     "the number of objects.",
     "<ground>boxes</ground><objects><region0><region1><region3></objects>There are 3 boxes.",
     [("boxes", 0), ("boxes", 1), ("boxes", 3)], 3, {}),
    ("caption", "", (1,), "Provide a brief description for <region1>.",
     "A red square on a table.", [], None, {}),
    ("caption_detailed", "", (0, 1), "Provide a detailed description for <region0><region1>.",
     "Two overlapping squares.", [], None, {}),
    ("ocr", "", (2,), "Please provide the ocr results of <region2> in the image.", "EXIT",
     [], None, {}),
    ("vqa", "What color is it?", (1,), "What color is it? <region1>", "It is red.", [], None,
     {}),
    ("ground", "", (), "Briefly describe this image and detect all mentioned objects. Answer "
     "with grounded object indexes.",
     "Two <ground>squares</ground><objects><region0><region1></objects> on a table.",
     [("squares", 0), ("squares", 1)], None, {}),
    ("visual_prompt", "", (3,), "Using the provided object <region3> as a reference, identify "
     "all other objects of the same category in this image. Respond with object indexes.",
     "<ground>square</ground><objects><region0><region1></objects>",
     [("square", 0), ("square", 1)], None, {}),
    ("reason", "Which box is the smallest?", (), None,
     "<think>Region <region3> is 2x2 px.</think><answer>the one at the top left</answer>"
     "<ground>smallest box</ground><objects><region3></objects>", [("smallest box", 3)], None,
     {"reasoning": "Region <region3> is 2x2 px.", "final_answer": "the one at the top left"}),
    ("detect_all", "", (), "Please identify every object in the image and provide their "
     "labels along with their indexes.",
     "<ground>square</ground><objects><region0><region1><region3></objects>"
     "<ground>label</ground><objects><region2></objects>",
     [("square", 0), ("square", 1), ("square", 3), ("label", 2)], None, {}),
]


@pytest.mark.parametrize("task,query,regions,prompt,answer,pairs,count,extras", CASES,
                         ids=[c[0] for c in CASES])
def test_task_prompt_and_answer(task, query, regions, prompt, answer, pairs, count, extras):
    text = parts_to_text(task_parts(task, query, regions))
    if prompt is not None:
        assert text == prompt
    else:
        assert text.endswith(query)
    result = QueryResult(task=task, query=query, prompt_text=text, answer="", groundings=[],
                         detections=[], proposals=Proposals(BOXES, SCORES), image_size=(50, 50))
    VLXSeek._fill_answer(result, answer)
    assert [(d.label, d.region_index) for d in result.detections] == pairs
    for det in result.detections:
        assert np.array_equal(det.box, BOXES[det.region_index])
        assert det.score == pytest.approx(float(SCORES[det.region_index]))
    assert result.count == count
    for key, value in extras.items():
        assert getattr(result, key) == value
    assert result.answer == answer
    json.dumps(result.to_dict())


def test_checkpoint_preprocessor_limits_are_effective(tmp_path, tiny_model_dir, astronaut):
    """min/max pixels come from the checkpoint's preprocessor_config.json (spec §7.1)."""
    import shutil

    copy = tmp_path / "small_pixels"
    shutil.copytree(tiny_model_dir, copy)
    cfg = json.loads((copy / "preprocessor_config.json").read_text())
    cfg["max_pixels"] = 28 * 28 * 64
    (copy / "preprocessor_config.json").write_text(json.dumps(cfg))
    small = VLXSeek.from_pretrained(str(copy), device="cpu", proposal_source="none")
    big = VLXSeek.from_pretrained(tiny_model_dir, device="cpu", proposal_source="none")
    boxes = BOXES * 10
    grid_small = small.preprocessor(astronaut, boxes).image_grid_thw
    grid_big = big.preprocessor(astronaut, boxes).image_grid_thw
    assert grid_big.tolist() == [[1, 36, 36]]  # 512 → 504 px, under the stock max
    h, w = int(grid_small[0, 1]), int(grid_small[0, 2])
    assert h * w * 14 * 14 <= 28 * 28 * 64 and h * w < 36 * 36
