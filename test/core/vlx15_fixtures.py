"""Session fixtures of the VLX-Seek 1.5 family tests: tiny random checkpoints in the real
format (``vlxseek make-tiny-model --family vlx_seek_1_5``) and a pipeline on one of them.

``tiny15_raster_dir`` has the same weights (same seed) with ``mm_bbox_order_mode: raster``, so a
query on it equals a query on ``tiny15_dir`` with the boxes given in raster order, up to the
index remapping.
"""
import json
import os

import pytest


@pytest.fixture(scope="session")
def tiny15_dir(tmp_path_factory):
    from vlxseek_core.families.vlx_seek_1_5.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny_vlx_seek_15")), seed=0)


@pytest.fixture(scope="session")
def tiny15_raster_dir(tiny15_dir, tmp_path_factory):
    """A copy of ``tiny15_dir`` whose config says ``mm_bbox_order_mode: raster``."""
    directory = tmp_path_factory.mktemp("tiny_vlx_seek_15_raster")
    for name in os.listdir(tiny15_dir):
        src, dst = os.path.join(tiny15_dir, name), directory / name
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(open(src, "rb").read())
    config = json.loads((directory / "config.json").read_text())
    config["mm_bbox_order_mode"] = "raster"
    os.remove(directory / "config.json")
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


@pytest.fixture(scope="session")
def tiny15_pipeline(tiny15_dir):
    from vlxseek_core.pipeline import VLXSeek

    return VLXSeek.from_pretrained(tiny15_dir, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=24)


def scripted_processor(tokenizer, script_text):
    """A RegionAnswerLogitsProcessor whose model 'wants' to write ``script_text`` (for
    monkeypatching ``vlxseek_core.pipeline.RegionAnswerLogitsProcessor``; any family)."""
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor

    script = list(tokenizer(script_text, add_special_tokens=False)["input_ids"])
    script.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    class Scripted(RegionAnswerLogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.prompt_length
            scores = scores.clone()
            scores[:, script[min(step, len(script) - 1)]] += 1e4
            return super().__call__(input_ids, scores)

    return Scripted
