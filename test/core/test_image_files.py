"""Image files that are not usable images: every reader (query CLI, training, evaluation,
converters) raises the project's error naming the path, never Pillow's exception types; a
decompression bomb is refused from its header, before any pixel is decoded."""
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from training_fixtures import make_builder, make_record

from vlxseek_core import cli
from vlxseek_core.errors import InvalidImageError, InvalidRequestError
from vlxseek_core.image_files import image_size, read_rgb


def _png_header_only(path, width, height):
    """A valid PNG signature and IHDR claiming ``width × height`` RGB, with a tiny IDAT: a few
    hundred bytes whose header asks for ``3 × width × height`` bytes when decoded."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name → path: a good PNG, a truncated one, a bomb, a text file, a folder, a missing one."""
    d = tmp_path_factory.mktemp("image_files")
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(d / "good.png")
    data = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(data[:len(data) // 2])
    (d / "text.png").write_text("not an image")
    (d / "folder.png").mkdir()
    names = ("good", "truncated", "text", "folder", "missing")
    out = {name: str(d / f"{name}.png") for name in names}
    out["bomb"] = _png_header_only(d / "bomb.png", 30_000, 30_000)
    return out


def test_good_file(files):
    img = read_rgb(files["good"])
    assert img.mode == "RGB" and img.size == (64, 48)
    assert image_size(files["good"]) == (64, 48)


@pytest.mark.parametrize("name, reason", [
    ("truncated", "truncated"), ("bomb", "exceeds limit"), ("text", "cannot identify"),
    ("folder", "Is a directory"), ("missing", "No such file")])
def test_read_rgb_refuses_with_the_path(files, name, reason):
    with pytest.raises(InvalidImageError, match=f"cannot read image '{files[name]}'.*{reason}"):
        read_rgb(files[name])


def test_image_size_refuses_a_bomb_from_its_header(files):
    with pytest.raises(InvalidImageError, match="exceeds limit"):
        image_size(files["bomb"])
    assert image_size(files["truncated"]) == (64, 48)  # the header alone is intact


def test_query_cli_prints_one_line_for_a_bomb(files, tiny_model_dir, capsys):
    rc = cli.main(["query", "--model", tiny_model_dir, "--image", files["bomb"], "--query",
                   "cat", "--boxes", "[[0, 0, 10, 10]]"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read image" in err and "exceeds limit" in err
    assert "Traceback" not in err


def test_training_refuses_a_bomb_before_the_model_loads(files, train_model_dir, images_dir,
                                                        tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(images_dir, folder)
    shutil.copy(files["bomb"], folder / "img1.png")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(dict(make_record("detect", f"img{i}.png"), id=f"r{i}"))
                            + "\n" for i in range(3)))
    out = tmp_path / "out"
    rc = cli.main(["train", "--stage", "1", "--model", train_model_dir, "--data", str(data),
                   "--images", str(folder), "--out", str(out), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "record 2: record 'r1'" in err and "exceeds limit" in err
    assert not out.exists()


def test_sample_builder_names_the_record_of_a_truncated_image(files, train_model_dir,
                                                              tmp_path):
    shutil.copy(files["truncated"], tmp_path / "t.png")
    record = dict(make_record("detect", "t.png"), id="rt")
    builder = make_builder(train_model_dir, str(tmp_path))
    with pytest.raises(InvalidRequestError, match="record 'rt': cannot read image.*truncated"):
        builder.build(record)


def test_refcoco_falls_back_to_the_boxes_for_an_unreadable_image(files, tmp_path):
    from vlxseek_core.training.converters import refcoco_to_records

    shutil.copy(files["bomb"], tmp_path / "a.png")
    entry = {"image": "a.png", "expression": "the cat", "bbox": [2, 3, 20, 30]}
    (tmp_path / "refs.jsonl").write_text(json.dumps(entry) + "\n")
    (rec,) = refcoco_to_records(str(tmp_path / "refs.jsonl"), images_dir=str(tmp_path))
    # size from the boxes' extent (+10 %): every candidate lies within 22 x 33 px
    assert np.asarray(rec.bbox_list).max(0)[2:].tolist() <= [22.0, 33.0]
