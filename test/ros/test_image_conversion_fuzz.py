"""Property tests of vlxseek_ros.image_conversion (no rclpy).

Arbitrary headers and payloads raise only InvalidImageError; valid messages round-trip pixels.
"""
from types import SimpleNamespace

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given, settings, strategies as st  # noqa: E402

from vlxseek_core.errors import InvalidImageError  # noqa: E402
from vlxseek_ros import image_conversion as ic  # noqa: E402

ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "bayer_rggb8", "yuv422", "16UC1",
             "mono16", "32FC1", "", "weird"]
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
TO_RGB = {"rgb8": lambda p: p, "bgr8": lambda p: p[..., ::-1],
          "mono8": lambda p: np.repeat(p, 3, axis=2), "rgba8": lambda p: p[..., :3],
          "bgra8": lambda p: p[..., 2::-1]}


@pytest.fixture(autouse=True)
def no_cv_bridge(monkeypatch):
    """Same behaviour whether or not cv_bridge is installed here."""
    monkeypatch.setattr(ic, "_cv_bridge_checked", True)
    monkeypatch.setattr(ic, "_cv_bridge_convert", None)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(-2, 40) | st.sampled_from([20000, 2**31 - 1]),
       height=st.integers(-2, 40) | st.sampled_from([20000, 2**31 - 1]),
       step=st.integers(-2, 200),
       encoding=st.sampled_from(ENCODINGS) | st.text(max_size=12),
       is_bigendian=st.integers(0, 1),
       data=st.binary(max_size=2000))
def test_arbitrary_messages_raise_only_invalid_image_error(width, height, step, encoding,
                                                           is_bigendian, data):
    msg = SimpleNamespace(width=width, height=height, step=step, encoding=encoding,
                          is_bigendian=is_bigendian, data=data)
    try:
        rgb = ic.image_msg_to_rgb(msg)
    except InvalidImageError:
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    assert len(data) == step * height


@settings(max_examples=150, deadline=None)
@given(encoding=st.sampled_from(sorted(CHANNELS)), height=st.integers(1, 12),
       width=st.integers(1, 12), pad=st.integers(0, 5), seed=st.integers(0, 2**31 - 1),
       container=st.sampled_from(["bytes", "bytearray", "numpy", "list"]))
def test_valid_messages_round_trip_pixels(encoding, height, width, pad, seed, container):
    c = CHANNELS[encoding]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, c), dtype=np.uint8)
    step = width * c + pad
    rows = np.zeros((height, step), np.uint8)
    rows[:, :width * c] = pixels.reshape(height, -1)
    raw = rows.tobytes()
    data = {"bytes": raw, "bytearray": bytearray(raw), "numpy": rows.reshape(-1),
            "list": list(raw)}[container]
    msg = SimpleNamespace(width=width, height=height, step=step, encoding=encoding,
                          is_bigendian=0, data=data)
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg), TO_RGB[encoding](pixels))
