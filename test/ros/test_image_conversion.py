"""Unit tests of vlxseek_ros.image_conversion (no rclpy: duck-typed messages)."""
import array
from types import SimpleNamespace

import numpy as np
import pytest

from vlxseek_core.errors import InvalidImageError
from vlxseek_ros import image_conversion as ic

H, W = 3, 4


def _rgb_image() -> np.ndarray:
    """A 3x4 RGB image whose every channel value is distinct and position-dependent."""
    rgb = np.zeros((H, W, 3), np.uint8)
    for y in range(H):
        for x in range(W):
            rgb[y, x] = (10 * y + x, 100 + 10 * y + x, 200 + 10 * y + x)
    return rgb


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0, **overrides) -> SimpleNamespace:
    """Build an Image-like message from H x W x C pixels, with `pad` bytes of row padding."""
    pixels = pixels if pixels.ndim == 3 else pixels[..., None]
    h, w, c = pixels.shape
    rows = pixels.reshape(h, w * c)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xEE, np.uint8)], axis=1)
    fields = dict(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c + pad,
                  data=rows.tobytes())
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.fixture
def no_cv_bridge(monkeypatch):
    """Make the module behave as on a machine without cv_bridge."""
    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", None)


RGB = _rgb_image()
GREY = RGB[..., 0]
ALPHA = np.full((H, W, 1), 7, np.uint8)


@pytest.mark.parametrize("encoding, pixels, expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2), RGB),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2), RGB),
    ("mono8", GREY, np.repeat(GREY[..., None], 3, axis=2)),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_supported_encodings_give_exact_rgb(encoding, pixels, expected, pad):
    out = ic.image_msg_to_rgb(_msg(np.ascontiguousarray(pixels), encoding, pad=pad))
    assert out.shape == (H, W, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)
    # the padding bytes (0xEE) never leak into the image
    assert not (out == 0xEE).any()


def test_pixel_positions_follow_row_major_layout():
    out = ic.image_msg_to_rgb(_msg(RGB, "rgb8", pad=3))
    assert tuple(out[0, 0]) == (0, 100, 200)
    assert tuple(out[0, 3]) == (3, 103, 203)   # x = 3 (right), y = 0 (top)
    assert tuple(out[2, 1]) == (21, 121, 221)  # x = 1, y = 2 (bottom)


@pytest.mark.parametrize("container", [bytes, bytearray,
                                       lambda b: array.array("B", b),
                                       lambda b: np.frombuffer(b, np.uint8),
                                       lambda b: list(b)])
def test_data_containers(container):
    msg = _msg(RGB, "rgb8")
    msg.data = container(msg.data)
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg), RGB)


def test_result_does_not_alias_message_buffer():
    buf = bytearray(_msg(RGB, "rgb8").data)
    msg = _msg(RGB, "rgb8", data=buf)
    out = ic.image_msg_to_rgb(msg)
    buf[0] = 255
    assert out[0, 0, 0] == 0


@pytest.mark.parametrize("overrides, needle", [
    (dict(width=0, step=0, data=b""), "empty"),
    (dict(height=0, data=b""), "empty"),
    (dict(data=b""), "0 bytes"),
    (dict(step=W * 3 - 1), "smaller than one row"),
    (dict(step=W * 3 + 1), "step x height"),          # data no longer matches the step
    (dict(height=2), "step x height"),                # data longer than step x height
    (dict(height=4), "step x height"),                # data shorter than step x height
    (dict(width=100_000, height=100_000, step=300_000, data=b""), "exceeds the limit"),
    (dict(width=20_000, height=20_000, step=60_000, data=b""), "exceeds the limit"),
    (dict(width=4000, height=3000, step=12000, data=b""), "0 bytes"),
    (dict(encoding=""), "encoding is empty"),
    (dict(encoding="16UC1"), "unsupported image encoding '16UC1'"),
    (dict(encoding="32FC1"), "unsupported image encoding '32FC1'"),
    (dict(encoding="mono16"), "16-bit"),
    (dict(encoding="jpeg"), "unknown encoding"),
    (dict(encoding="RGB8"), "unknown encoding"),
    (dict(encoding="bayer_rggb8"), "needs cv_bridge"),
    (dict(encoding="yuv422"), "needs cv_bridge"),
    (dict(data=np.zeros(H * W * 3, np.float32)), "dtype float32"),
    (dict(data=object()), "not a byte sequence"),
])
def test_invalid_messages_raise_clear_errors(no_cv_bridge, overrides, needle):
    with pytest.raises(InvalidImageError, match=needle.replace("(", r"\(")):
        ic.image_msg_to_rgb(_msg(RGB, **{"encoding": "rgb8", **overrides}))


def test_unsupported_encoding_lists_only_what_is_accepted(no_cv_bridge):
    """mono16 is refused: the message must not call the cv_bridge encodings supported then."""
    with pytest.raises(InvalidImageError) as info:
        ic.image_msg_to_rgb(_msg(RGB, "mono16"))
    message = str(info.value)
    accepted = message.split("accepted: ")[1]
    listed = accepted.split(" (")[0].split(", ")
    assert listed == ["bgr8", "bgra8", "mono8", "rgb8", "rgba8"]
    assert "need cv_bridge, which is not importable" in message
    for refused in ic.CV_BRIDGE_ENCODINGS:
        assert refused not in listed


def test_unsupported_encoding_lists_cv_bridge_encodings_when_importable(monkeypatch):
    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", lambda msg: None)
    with pytest.raises(InvalidImageError) as info:
        ic.image_msg_to_rgb(_msg(RGB, "mono16"))
    listed = str(info.value).split("accepted: ")[1].split(", ")
    assert set(listed) == set(ic.NUMPY_ENCODINGS) | set(ic.CV_BRIDGE_ENCODINGS)
    assert "not importable" not in str(info.value)


def test_invalid_image_error_is_a_value_error():
    with pytest.raises(ValueError):
        ic.image_msg_to_rgb(_msg(RGB, "rgb8", data=b""))


def test_missing_fields_raise_invalid_image_error():
    with pytest.raises(InvalidImageError, match="not an image message"):
        ic.image_msg_to_rgb(SimpleNamespace(height=1, width=1))


def test_bigendian_flag_is_irrelevant_for_8bit_encodings():
    out = ic.image_msg_to_rgb(_msg(RGB, "rgb8", is_bigendian=1))
    np.testing.assert_array_equal(out, RGB)


def test_bigendian_multibyte_encoding_is_rejected(monkeypatch):
    monkeypatch.setitem(ic.CV_BRIDGE_ENCODINGS, "test16", ic._Layout(1, 2))
    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", lambda msg: None)
    msg = _msg(np.zeros((H, W, 2), np.uint8), "test16", is_bigendian=1)
    with pytest.raises(InvalidImageError, match="big-endian"):
        ic.image_msg_to_rgb(msg)


def test_cv_bridge_path_is_used_for_bayer_when_available(monkeypatch):
    calls = []

    def fake_bridge(msg):
        calls.append(msg.encoding)
        return np.full((msg.height, msg.width, 3), 9, np.uint8)

    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", fake_bridge)
    out = ic.image_msg_to_rgb(_msg(GREY, "bayer_rggb8"))
    assert calls == ["bayer_rggb8"]
    assert out.shape == (H, W, 3) and (out == 9).all()
    # geometry is still validated before cv_bridge sees the message
    with pytest.raises(InvalidImageError, match="step x height"):
        ic.image_msg_to_rgb(_msg(GREY, "bayer_rggb8", height=2))


def test_cv_bridge_failure_becomes_invalid_image_error(monkeypatch):
    def broken_bridge(msg):
        raise RuntimeError("boom")

    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", broken_bridge)
    with pytest.raises(InvalidImageError, match="cv_bridge could not convert 'yuv422': boom"):
        ic.image_msg_to_rgb(_msg(np.zeros((H, W, 2), np.uint8), "yuv422"))


@pytest.mark.parametrize("encoding, expected", [("rgb8", RGB), ("bgr8", RGB[..., ::-1])])
def test_rgb_to_image_msg_roundtrip(encoding, expected):
    header = SimpleNamespace(frame_id="cam", stamp=SimpleNamespace(sec=5, nanosec=6))
    msg = ic.rgb_to_image_msg(RGB, header, encoding=encoding, msg_type=SimpleNamespace)
    assert msg.header is header
    assert (msg.height, msg.width, msg.step, msg.is_bigendian) == (H, W, 3 * W, 0)
    assert msg.encoding == encoding
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(
        np.frombuffer(msg.data, np.uint8).reshape(H, W, 3), expected)
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg), RGB)


@pytest.mark.parametrize("bad, kwargs", [
    (np.zeros((H, W), np.uint8), {}),
    (np.zeros((H, W, 4), np.uint8), {}),
    (np.zeros((H, W, 3), np.float32), {}),
    (RGB, {"encoding": "mono8"}),
])
def test_rgb_to_image_msg_rejects_bad_input(bad, kwargs):
    with pytest.raises(ValueError):
        ic.rgb_to_image_msg(bad, None, msg_type=SimpleNamespace, **kwargs)
