"""The two answer formats the benchmarks compare, for the same set of objects.

* VLM-FO1 region references:
  ``<ground>person</ground><objects><region0><region3></objects>`` per label (blocks written
  back to back, the form of the paper's examples and of vlxseek's constrained decoding), then
  ``<|im_end|>``.
* Qwen2.5-VL coordinates, its native grounding output: a fenced JSON list with one
  ``{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`` per object, tab-indented, absolute integer
  pixels of the smart-resized model input (e.g. 1288×728 for a 1280×720 frame)::

      ```json
      [
      \t{"bbox_2d": [135, 114, 1016, 672], "label": "person"},
      \t{"bbox_2d": [5, 14, 160, 372], "label": "cup"}
      ]
      ```<|im_end|>

Both strings end with ``<|im_end|>``: the model has to emit it to stop in either format.

For VLX-Seek 1.5 the region answer names ``<objK>`` instead of ``<regionK>`` (spec
vlx-seek-1.5 §4.5) and the coordinate answer uses coordinates relative to the image scaled to
0…1000 (``relative=True``), the grounding convention of Qwen3-VL, which Qwen3.5 is **assumed**
to keep (the spec does not state Qwen3.5's native grounding format).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .common import qwen_resized_size, random_boxes

MIXED_LABELS = ("person", "car", "traffic light", "bicycle", "dog", "chair", "cup", "backpack")
"""Labels of the mixed case (COCO names; one has two words)."""


@dataclass
class SceneObjects:
    """``N`` objects of one frame: boxes, labels and the proposals they are among.

    Attributes:
        boxes: float32 ``[N, 4]`` xyxy pixels of the ``width`` × ``height`` frame.
        labels: ``N`` label strings.
        region_indices: ``N`` distinct proposal indices (< ``num_proposals``) the objects are.
        width, height: the frame size.
    """

    boxes: np.ndarray
    labels: List[str]
    region_indices: List[int]
    width: int
    height: int


def sample_objects(n: int, width: int = 1280, height: int = 720, num_proposals: int = 100,
                   mixed: bool = False, seed: int = 0) -> SceneObjects:
    """``n`` seeded objects; all ``"person"`` unless ``mixed`` (labels drawn from
    :data:`MIXED_LABELS`). Their region indices are a random subset of the proposals.

    Raises:
        ValueError: ``n`` is not in ``[1, num_proposals]``.
    """
    if not 1 <= n <= num_proposals:
        raise ValueError(f"n={n} objects must be in [1, num_proposals={num_proposals}]")
    rng = np.random.default_rng(seed + 7919 * n)
    labels = ([str(v) for v in rng.choice(MIXED_LABELS, size=n)] if mixed
              else ["person"] * n)
    indices = [int(i) for i in rng.choice(num_proposals, size=n, replace=False)]
    return SceneObjects(random_boxes(n, width, height, seed=seed + n), labels, indices,
                        width, height)


def _by_label(objects: SceneObjects) -> Dict[str, List[int]]:
    """Object positions grouped by label, labels in order of first appearance."""
    groups: Dict[str, List[int]] = {}
    for pos, label in enumerate(objects.labels):
        groups.setdefault(label, []).append(pos)
    return groups


def region_answer(objects: SceneObjects, index_prefix: str = "region") -> str:
    """The answer naming the objects by region index (one block per label).

    Args:
        index_prefix: ``"region"`` (VLM-FO1 ``<regionK>``) or ``"obj"`` (VLX-Seek 1.5).
    """
    blocks = []
    for label, positions in _by_label(objects).items():
        refs = "".join(f"<{index_prefix}{k}>" for k in sorted(objects.region_indices[p]
                                                              for p in positions))
        blocks.append(f"<ground>{label}</ground><objects>{refs}</objects>")
    return "".join(blocks) + "<|im_end|>"


def coordinate_answer(objects: SceneObjects, relative: bool = False) -> str:
    """The Qwen-VL answer writing every object's ``bbox_2d`` (grouped by label).

    Args:
        relative: coordinates in 0…1000 of the image (Qwen3-VL convention, used for
            VLX-Seek 1.5) instead of Qwen2.5-VL's absolute pixels of the resized input.
    """
    w_in, h_in = ((1000, 1000) if relative
                  else qwen_resized_size(objects.width, objects.height))
    scale = np.array([w_in / objects.width, h_in / objects.height] * 2, dtype=np.float64)
    lines = []
    for label, positions in _by_label(objects).items():
        for p in positions:
            box = np.rint(objects.boxes[p].astype(np.float64) * scale).astype(int)
            box = np.clip(box, 0, [w_in, h_in, w_in, h_in])
            coords = ", ".join(str(int(v)) for v in box)
            lines.append(f'\t{{"bbox_2d": [{coords}], "label": {json.dumps(label)}}}')
    return "```json\n[\n" + ",\n".join(lines) + "\n]\n```<|im_end|>"


def coordinate_answer_json(answer: str) -> list:
    """Parse :func:`coordinate_answer` output back (a consistency check)."""
    body = answer.removesuffix("<|im_end|>").strip()
    body = body.removeprefix("```json").removesuffix("```")
    return json.loads(body)


def token_ids(tokenizer, text: str) -> List[int]:
    """Ids of ``text`` as the model would emit them (special tokens are single ids)."""
    return tokenizer.encode(text, add_special_tokens=False)
