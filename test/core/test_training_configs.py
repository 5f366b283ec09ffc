"""config/training/: the DeepSpeed and FSDP configs parse, leave the run-dependent values to
the Trainer ("auto"), and wrap module classes that exist in the model (issue 9 §4)."""
import json
import os

import pytest
import torch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "training")


def _model_classes():
    from vlxseek_core.checkpoint import build_empty_model
    from vlxseek_core.config import VLMFO1Config
    from vlxseek_core.tiny import tiny_config_dict

    with torch.device("meta"):
        model = build_empty_model(VLMFO1Config(**tiny_config_dict()), torch.float32)
    return model, {type(m).__name__ for m in model.modules()}


@pytest.mark.parametrize("name,stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_deepspeed_configs(name, stage):
    with open(os.path.join(CONFIG_DIR, name), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto"
    # the Trainer builds optimiser and scheduler (its no-decay groups, --scheduler)
    assert "optimizer" not in config and "scheduler" not in config
    if stage == 3:  # the final save gathers full 16-bit weights for the reference export
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]


def test_fsdp_config_parses_and_wraps_model_classes():
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(os.path.join(CONFIG_DIR, "fsdp.yaml"))
    assert str(config.distributed_type).endswith("FSDP")
    assert config.mixed_precision == "bf16"
    fsdp = config.fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trainable weights share units
    wrap = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert wrap == ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    model, classes = _model_classes()
    assert set(wrap) <= classes
    assert set(wrap) == set(model._no_split_modules)


def test_readme_names_every_config():
    with open(os.path.join(CONFIG_DIR, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    for name in ("zero2.json", "zero3.json", "fsdp.yaml"):
        assert f"config/training/{name}" in text
    assert "accelerate launch --config_file config/training/fsdp.yaml -m vlxseek_core.cli" \
        in text
