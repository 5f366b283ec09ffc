"""3D from depth (issue 10 §5): synthetic depth images of known geometry, error under 1 cm."""
import numpy as np
import pytest

from vlxseek_core.depth3d import (Box3D, CameraIntrinsics, box_depth_pixels, box_to_3d,
                                  depth_to_metres)
from vlxseek_core.errors import InvalidRequestError

K = [600.0, 0.0, 319.5, 0.0, 610.0, 239.5, 0.0, 0.0, 1.0]
W, H = 640, 480
CUBE = {"center": (0.3, -0.1, 1.2), "side": 0.2}  # fronto-parallel face, metres
PLANE_Z = 2.0


def _render(width, height, cube=CUBE, plane=lambda x, y: np.full_like(x, PLANE_Z)):
    """Depth (metres) of a pinhole camera looking at a plane with a square face in front."""
    cam = CameraIntrinsics.from_k(K, W, H).scaled_to(width, height)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rx, ry = (u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy  # ray direction with z = 1
    depth = plane(rx, ry)
    (cx, cy, cz), half = cube["center"], cube["side"] / 2
    inside = (np.abs(rx * cz - cx) < half) & (np.abs(ry * cz - cy) < half)
    depth[inside] = cz
    return depth.astype(np.float32)


def _cube_box(cube=CUBE, grow=0.0):
    """The face's projection in colour pixels (edge coordinates), optionally grown."""
    cam = CameraIntrinsics.from_k(K, W, H)
    (cx, cy, cz), half = cube["center"], cube["side"] / 2 * (1 + grow)
    return [cam.fx * (cx - half) / cz + cam.cx + 0.5, cam.fy * (cy - half) / cz + cam.cy + 0.5,
            cam.fx * (cx + half) / cz + cam.cx + 0.5, cam.fy * (cy + half) / cz + cam.cy + 0.5]


def _assert_cube(box3d: Box3D, size_tol=0.01):
    assert box3d is not None
    np.testing.assert_allclose(box3d.center, CUBE["center"], atol=0.01)
    np.testing.assert_allclose(box3d.size[:2], (CUBE["side"],) * 2, atol=size_tol)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
@pytest.mark.parametrize("depth_size", [(W, H), (W // 2, H // 2), (W * 3 // 4, H * 3 // 4)])
def test_face_in_front_of_a_plane_within_1cm(encoding, depth_size):
    depth = _render(*depth_size)
    if encoding == "16UC1":
        depth = np.round(depth * 1000).astype(np.uint16)
    cam = CameraIntrinsics.from_k(K, W, H)
    exact = box_to_3d(depth_to_metres(depth, encoding), _cube_box(), cam)
    _assert_cube(exact)
    assert exact.size[2] == pytest.approx(0.0, abs=0.002)
    # a detector's box is looser than the object: the median still finds the face
    loose = box_to_3d(depth_to_metres(depth, encoding), _cube_box(grow=0.25), cam)
    np.testing.assert_allclose(loose.center, CUBE["center"], atol=0.01)
    # the plane itself, far from the face
    plane = box_to_3d(depth_to_metres(depth, encoding), [10, 10, 60, 50], cam)
    assert plane.center[2] == pytest.approx(PLANE_Z, abs=0.002)
    assert plane.center[0] == pytest.approx((35 - 0.5 - 319.5) * PLANE_Z / 600, abs=0.01)


def test_holes_and_invalid_values_are_ignored():
    depth = _render(W, H)
    rng = np.random.default_rng(0)
    holes = rng.random(depth.shape) < 0.4
    depth[holes] = rng.choice([0.0, np.nan, np.inf, -1.0], size=int(holes.sum()))
    _assert_cube(box_to_3d(depth_to_metres(depth, "32FC1"), _cube_box(),
                           CameraIntrinsics.from_k(K, W, H)))


def test_tilted_plane_center_and_depth_spread():
    def tilted(x, y):  # plane z = 1.5 + 0.3 X through the optical axis
        return 1.5 / (1.0 - 0.3 * x)
    depth = _render(W, H, cube={"center": (0, 0, 9.0), "side": 0.0}, plane=tilted)
    cam = CameraIntrinsics.from_k(K, W, H)
    box = [300, 220, 340, 260]  # around the principal point
    out = box_to_3d(depth_to_metres(depth, "32FC1"), box, cam)
    assert out.center[2] == pytest.approx(1.5, abs=0.005)
    assert abs(out.center[0]) < 0.005 and abs(out.center[1]) < 0.005
    assert 0.0 < out.size[2] < 0.03  # a 4 cm wide strip of a 0.3-slope plane


def test_no_valid_depth_gives_none_and_tiny_boxes_sample_one_pixel():
    depth = np.full((H, W), np.nan, dtype=np.float32)
    cam = CameraIntrinsics.from_k(K, W, H)
    assert box_to_3d(depth, [100, 100, 200, 200], cam) is None
    depth[150, 120] = 1.0
    assert box_depth_pixels(depth, [120.2, 150.2, 120.4, 150.4], (H, W)).tolist() == [1.0]
    assert box_to_3d(depth, [100, 100, 200, 200], cam, min_valid_pixels=2) is None
    assert box_to_3d(depth, [100, 100, 200, 200], cam).center[2] == 1.0


@pytest.mark.parametrize("depth, encoding", [
    (np.zeros((4, 4), np.uint16), "32FC1"), (np.zeros((4, 4), np.float32), "16UC1"),
    (np.zeros((4, 4, 1), np.float32), "32FC1"), (np.zeros((0, 4), np.float32), "32FC1"),
    (np.zeros((4, 4), np.uint8), "8UC1")])
def test_bad_depth_images(depth, encoding):
    with pytest.raises(InvalidRequestError, match="depth"):
        depth_to_metres(depth, encoding)


@pytest.mark.parametrize("k", [[0] * 9, [600, 0, 320, 0, 600, 240, 0, 0], ["a"] * 9,
                               [600, 0, np.nan, 0, 600, 240, 0, 0, 1]])
def test_bad_intrinsics(k):
    with pytest.raises(InvalidRequestError, match="camera matrix"):
        CameraIntrinsics.from_k(k, W, H)


def test_scaled_intrinsics_keep_the_field_of_view():
    cam = CameraIntrinsics.from_k(K, W, H)
    half = cam.scaled_to(W // 2, H // 2)
    # the image's left edge (u = -0.5) maps to the same ray at both resolutions
    assert (-0.5 - cam.cx) / cam.fx == pytest.approx((-0.5 - half.cx) / half.fx)
    assert (H - 0.5 - cam.cy) / cam.fy == pytest.approx((H / 2 - 0.5 - half.cy) / half.fy)
