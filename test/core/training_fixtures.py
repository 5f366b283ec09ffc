"""Shared helpers and fixtures of the training tests: a tiny random checkpoint whose aux image
keeps the input size, small images, records for every task and a sample builder.

``conftest.py`` imports the fixtures (session-wide, built once); test modules import the
helpers (``make_record``, ``write_train_data``, ...) directly.
"""
import json

import numpy as np
import pytest
from PIL import Image

from vlxseek_core.answer_format import format_answer
from vlxseek_core.prompts import parts_to_text, task_parts

TASK_EXAMPLES = {
    "detect": ("red circle; cat", (), [("red circle", [1]), ("cat", [])]),
    "refer": ("the leftmost red square", (), [("the leftmost red square", [2])]),
    "count": ("red circles", (), None),
    "caption": ("", (0,), None),
    "caption_detailed": ("", (1,), None),
    "ocr": ("", (2,), None),
    "vqa": ("what colour is it?", (), None),
    "ground": ("", (), None),
    "visual_prompt": ("", (1,), [("<region1>", [0, 2])]),
    "reason": ("which object is red?", (), None),
    "detect_all": ("", (), [("red circle", [0])]),
}
BOXES = [[4.0, 6.0, 40.0, 50.0], [60.0, 10.0, 100.0, 40.0], [20.0, 60.0, 70.0, 110.0]]
IMAGE_SIZES = [(112, 112), (112, 112), (140, 112)]
"""(height, width) of ``img0.png`` … ``img2.png`` in :func:`images_dir`."""


def make_record(task, image="img0.png", boxes=BOXES):
    """A valid training record of ``task`` on ``image`` (answers built by ``format_answer``)."""
    query, regions, blocks = TASK_EXAMPLES[task]
    answer = format_answer(blocks) if blocks else "a red circle."
    if task == "count":
        answer = format_answer([("red circles", [0, 2])], count=2)
    text = parts_to_text(task_parts(task, query, regions))
    return {"id": f"{task}-0", "image": image, "task": task, "query": query,
            "region_indices": list(regions), "bbox_list": boxes,
            "conversations": [{"from": "human", "value": "<image>\n" + text},
                              {"from": "gpt", "value": answer}]}


def write_train_data(path, num_records=8, tasks=("detect", "refer", "count", "caption")):
    """Write ``num_records`` records (tasks and images cycling) as JSONL to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(num_records):
            record = make_record(tasks[i % len(tasks)], f"img{i % len(IMAGE_SIZES)}.png")
            record["id"] = f"{record['id'][:-2]}-{i}"
            fh.write(json.dumps(record) + "\n")
    return str(path)


def write_images(folder):
    """Write the seeded random ``img{i}.png`` files of :data:`IMAGE_SIZES` into ``folder``."""
    rng = np.random.default_rng(0)
    for i, size in enumerate(IMAGE_SIZES):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            f"{folder}/img{i}.png")
    return str(folder)


@pytest.fixture(scope="session")
def train_model_dir(tmp_path_factory):
    """A tiny random checkpoint whose aux image keeps the input size (fast on small images)."""
    from vlxseek_core.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny_train")), seed=1,
                           aux_image_aspect_ratio="dynamic")


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("train_images"))


def make_builder(model_dir, images_dir, aux_aspect="dynamic"):
    """The ``SampleBuilder`` of a checkpoint directory (its tokenizer and image processor)."""
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.preprocessing import ImagePreprocessor
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.samples import SampleBuilder

    pre = ImagePreprocessor(Qwen2VLImageProcessorPil.from_pretrained(model_dir), aux_aspect)
    return SampleBuilder(load_tokenizer(model_dir), pre, images_dir)


@pytest.fixture(scope="session")
def builder(train_model_dir, images_dir):
    return make_builder(train_model_dir, images_dir)


def patch_oracle_head(monkeypatch, edit=None):
    """Make every checkpoint that ``vlxseek_core.checkpoint.load_model`` loads an oracle whose
    most likely next token is always the answer's target: ``lm_head`` becomes the identity
    and ``TrainingModel.hidden_states`` returns one-hot rows of the targets. ``edit(target,
    labels)`` (optional) may change the first batch's targets (``[B, L - 1]`` ids) in place."""
    import torch

    import vlxseek_core.checkpoint as checkpoint
    from vlxseek_core.training.model import TrainingModel

    real_hidden, real_load = TrainingModel.hidden_states, checkpoint.load_model

    def oracle_hidden(self, *args, **kwargs):
        hidden, labels, frames = real_hidden(self, *args, **kwargs)
        target = labels[:, 1:].clamp(min=0).clone()
        if edit is not None and not getattr(self, "_edited", False):
            edit(target, labels)
            self._edited = True
        vocab = self.vlm.model.embed_tokens.num_embeddings + 2
        fake = torch.nn.functional.one_hot(target, vocab).float()
        return torch.cat([fake, fake[:, -1:]], 1), labels, frames

    def load_with_identity_head(path, *args, **kwargs):
        vlm, extra = real_load(path, *args, **kwargs)
        vlm.lm_head = torch.nn.Identity()
        return vlm, extra

    monkeypatch.setattr(TrainingModel, "hidden_states", oracle_hidden)
    monkeypatch.setattr(checkpoint, "load_model", load_with_identity_head)
