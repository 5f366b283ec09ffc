"""VLX-Seek 1.5 towers against spec-exact re-statements (vlx-seek-1.5.md §2.1-2.2, §3).

The C-RADIO test re-states §3.1-3.4 in plain torch (channel-major patch flatten → Linear,
position-table resize/crop, prefix tokens, pre-norm blocks, intermediates) over a random
depth-cut state_dict in the *reference* key names at the real widths, and compares the
timm-based tower loaded from it through the key mapping (float64). The Qwen3.5 test checks the
key prefix rename against stock transformers and the post-merger map's reshape and stride.
"""
import math

import pytest
import torch
from torch.nn import functional as F

from vlxseek_core.families.vlx_seek_1_5.config import (RADIO_SO400M_AUX_CONFIG,
                                                       VLX_SEEK_15_10B_CONFIG, VLXSeek15Config,
                                                       radio_out_indices)
from vlxseek_core.families.vlx_seek_1_5.tiny import TINY_TEXT, TINY_VISION
from vlxseek_core.families.vlx_seek_1_5.towers import (PrimaryTower, RadioAuxTower,
                                                       aux_input_size, radio_from_reference,
                                                       radio_to_reference)

WIDTH, HEADS, MLP, DEPTH, PREFIX, GRID = 1152, 16, 4304, 4, 10, 128


def reference_radio_state(seed=0):
    """A random C-RADIO state_dict, reference names below ``image_tower.``, depth 4."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

    pre = "radio_model.model."
    sd = {pre + "patch_generator.embedder.weight": rnd(WIDTH, 768),
          pre + "patch_generator.pos_embed": rnd(1, GRID * GRID, WIDTH, scale=0.5),
          pre + "patch_generator.cls_token.token": rnd(PREFIX, WIDTH, scale=0.5),
          # not the CLIP constants: the tower must take the checkpoint's, bf16-rounded
          "radio_model.input_conditioner.norm_mean": torch.tensor([[[0.41]], [[0.52]], [[0.33]]]),
          "radio_model.input_conditioner.norm_std": torch.tensor([[[0.21]], [[0.29]], [[0.25]]]),
          "radio_model.summary_idxs": torch.tensor([0, 1])}
    for i in range(DEPTH):
        b = f"{pre}blocks.{i}."
        sd.update({b + "norm1.weight": 1 + rnd(WIDTH), b + "norm1.bias": rnd(WIDTH),
                   b + "attn.qkv.weight": rnd(3 * WIDTH, WIDTH),
                   b + "attn.qkv.bias": rnd(3 * WIDTH),
                   b + "attn.proj.weight": rnd(WIDTH, WIDTH), b + "attn.proj.bias": rnd(WIDTH),
                   b + "norm2.weight": 1 + rnd(WIDTH), b + "norm2.bias": rnd(WIDTH),
                   b + "mlp.fc1.weight": rnd(MLP, WIDTH), b + "mlp.fc1.bias": rnd(MLP),
                   b + "mlp.fc2.weight": rnd(WIDTH, MLP), b + "mlp.fc2.bias": rnd(WIDTH)})
    return sd


def spec_radio(sd, image, indices):
    """§3.2-3.4 re-stated: resize, bf16-rounded conditioner, CPE, blocks, intermediates."""
    h16, w16 = (max(int(round(s / 16) * 16), 16) for s in image.shape[-2:])
    x = image
    if (h16, w16) != tuple(image.shape[-2:]):
        x = F.interpolate(x, size=(h16, w16), mode="bilinear", align_corners=False, antialias=True)
    mean = sd["radio_model.input_conditioner.norm_mean"].to(torch.bfloat16).to(x.dtype)
    std = sd["radio_model.input_conditioner.norm_std"].to(torch.bfloat16).to(x.dtype)
    x = (x - mean) / std
    h, w = h16 // 16, w16 // 16
    # patches flattened channel-major (c, y, x), raster order, bias-free Linear
    patches = x.reshape(3, h, 16, w, 16).permute(1, 3, 0, 2, 4).reshape(h * w, 768)
    pre = "radio_model.model."
    tokens = patches @ sd[pre + "patch_generator.embedder.weight"].T
    table = sd[pre + "patch_generator.pos_embed"].reshape(1, GRID, GRID, WIDTH).permute(0, 3, 1, 2)
    if (h, w) != (GRID, GRID):
        m = max(h, w)
        table = F.interpolate(table.float(), size=(m, m), mode="bilinear",
                              align_corners=False).to(x.dtype)[:, :, :h, :w]
    tokens = tokens + table.reshape(WIDTH, h * w).T
    seq = torch.cat([sd[pre + "patch_generator.cls_token.token"], tokens], dim=0)
    outs = []
    for i in range(max(indices) + 1):
        b = f"{pre}blocks.{i}."
        y = F.layer_norm(seq, (WIDTH,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        q, k, v = (y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(-1, HEADS, WIDTH // HEADS).transpose(0, 1) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(WIDTH // HEADS), dim=-1)
        y = (att @ v).transpose(0, 1).reshape(-1, WIDTH)
        seq = seq + y @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        y = F.layer_norm(seq, (WIDTH,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        seq = seq + y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        if i in indices:
            outs.append(seq[PREFIX:].T.reshape(1, WIDTH, h, w))
    return outs


def depth_cut_config():
    cfg = VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG)
    cfg.vlxseek_aux_vision_config = dict(depth=DEPTH)
    return cfg


@pytest.fixture(scope="module")
def radio():
    sd = reference_radio_state()
    tower = RadioAuxTower(depth_cut_config()).double()  # float64 before the weights arrive
    state, unexpected = radio_from_reference(sd, tower.vit)
    assert unexpected == []
    missing, extra = tower.load_state_dict(state, strict=True)
    assert not missing and not extra
    return sd, tower


def test_out_indices_and_resize_rule():
    assert radio_out_indices(27) == [6, 13, 19, 26]
    assert radio_out_indices(4) == [0, 1, 2, 3]
    assert aux_input_size(150, 230) == (144, 224)
    assert aux_input_size(300, 520) == (304, 512)  # 520/16 = 32.5 rounds to even
    assert aux_input_size(5, 7) == (16, 16)


@pytest.mark.parametrize("size", [(150, 230), (300, 520), (64, 48)])
def test_radio_tower_equals_spec_restatement(radio, size):
    sd, tower = radio
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    tower.train()  # the ViT must stay in eval mode (§3.4)
    assert not tower.vit.training
    with torch.no_grad():
        got = tower(image)
    want = spec_radio(sd, image, tower.out_indices)
    assert len(got) == 4
    for g, w in zip(got, want):
        assert g.shape == w.shape == (1, WIDTH, *(s // 16 for s in aux_input_size(*size)))
        assert (g - w).abs().max().item() < 1e-10


def test_conditioner_uses_bf16_rounded_checkpoint_constants(radio):
    sd, tower = radio
    image = torch.rand(1, 3, 32, 48, dtype=torch.float64)
    mean = sd["radio_model.input_conditioner.norm_mean"].to(torch.bfloat16).double()
    std = sd["radio_model.input_conditioner.norm_std"].to(torch.bfloat16).double()
    assert torch.equal(tower.condition(image), (image - mean) / std)
    assert not torch.equal(mean, sd["radio_model.input_conditioner.norm_mean"])


def test_radio_key_mapping_round_trip(radio):
    sd, tower = radio
    back = radio_to_reference({k: v for k, v in tower.state_dict().items()})
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key].to(value.dtype), value), key


def test_radio_10b_names_on_meta():
    with torch.device("meta"):
        tower = RadioAuxTower(VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG))
    names = {k: tuple(v.shape) for k, v in radio_to_reference(tower.state_dict(), False).items()}
    assert len(names) == 330
    assert names["radio_model.model.patch_generator.pos_embed"] == (1, 16384, 1152)
    assert names["radio_model.model.patch_generator.cls_token.token"] == (10, 1152)
    assert RADIO_SO400M_AUX_CONFIG["version"] == "c-radio_v4-so400m"


def test_radio_with_a_timm_lacking_the_architecture_names_the_version(monkeypatch):
    # timm < 1.0.31 has no naflexvit_so400m_patch16_radio_v4 and would say "Unknown model".
    import timm

    from vlxseek_core.errors import CheckpointError

    monkeypatch.setattr(timm, "list_models", lambda *a, **k: ["naflexvit_base_patch16_radio_v3"])
    monkeypatch.setattr(timm, "__version__", "1.0.29")
    with pytest.raises(CheckpointError, match=r"timm >= 1\.0\.31, found 1\.0\.29"):
        with torch.device("meta"):
            RadioAuxTower(VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG))


# ----------------------------------------------------------------------------- Qwen3.5 tower

def tiny_qwen_config():
    from transformers import Qwen3_5Config

    return Qwen3_5Config(text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION))


def test_primary_tower_keys_are_stock_visual_renamed():
    from transformers import Qwen3_5ForConditionalGeneration

    with torch.device("meta"):
        stock = Qwen3_5ForConditionalGeneration(
            VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG)).state_dict()
        ours = PrimaryTower(VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG).vision_config).state_dict()
    visual = {k[len("model.visual."):]: tuple(v.shape) for k, v in stock.items()
              if k.startswith("model.visual.")}
    assert {k[len("visual."):]: tuple(v.shape) for k, v in ours.items()} == visual
    assert len(visual) == 333


def test_primary_map_is_merger_output_at_stride_32():
    from PIL import Image
    from transformers import Qwen2VLImageProcessor, Qwen3_5Model

    torch.manual_seed(0)
    cfg = tiny_qwen_config()
    stock = Qwen3_5Model(cfg).eval()
    tower = PrimaryTower(cfg.vision_config).eval()
    tower.visual.load_state_dict(stock.visual.state_dict(), strict=True)
    proc = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                 min_pixels=56 * 56, max_pixels=2048 * 2048)
    image = Image.fromarray((torch.rand(100, 150, 3) * 255).to(torch.uint8).numpy())
    inputs = proc(images=image, return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 10]]  # 100x150 -> 96x160 (factor 32)
    with torch.no_grad():
        tokens, maps = tower(inputs["pixel_values"], grid)
        want = stock.get_image_features(inputs["pixel_values"], grid).pooler_output
    want = torch.cat(want) if isinstance(want, (list, tuple)) else want
    assert torch.equal(tokens[0], want)
    fmap = maps[0]
    assert fmap.shape == (1, TINY_VISION["out_hidden_size"], 3, 5)  # stride 32 px
    for y in range(3):
        for x in range(5):
            assert torch.equal(fmap[0, :, y, x], tokens[0][y * 5 + x])
