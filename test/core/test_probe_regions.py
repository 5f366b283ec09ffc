"""benchmarks/probe_regions.py: the collapse check of region tokens (issue 9 §7)."""
import numpy as np
import pytest

from benchmarks.probe_regions import in_image_cosine, measure, probe_accuracy


def test_in_image_cosine_of_collapsed_and_orthogonal_rows():
    direction = np.array([1.0, 2.0, -1.0, 0.5])
    collapsed = np.outer([1.0, 3.0, 0.5], direction)  # same direction, other norms
    assert in_image_cosine(collapsed) == pytest.approx(1.0)
    assert in_image_cosine(np.eye(4)) == pytest.approx(0.0)
    assert in_image_cosine(np.eye(4)[:1]) is None


def test_probe_reads_informative_rows_and_not_collapsed_ones():
    rng = np.random.default_rng(0)
    labels = [str(c) for c in rng.integers(0, 4, 400)]
    centres = rng.normal(size=(4, 16)) * 3
    rows = np.array([centres[int(c)] for c in labels]) + rng.normal(size=(400, 16)) * 0.5
    good = probe_accuracy(rows[:200], labels[:200], rows[200:], labels[200:])
    assert good["accuracy"] > 0.95 and 0.2 < good["chance"] < 0.4
    flat = np.outer(rng.uniform(0.5, 2.0, 400), centres[0])  # one direction for every row
    bad = probe_accuracy(flat[:200], labels[:200], flat[200:], labels[200:])
    assert bad["accuracy"] < 0.5


def test_measure_splits_images_and_reports_every_number():
    rng = np.random.default_rng(1)
    objects = [{"category": c, "colour": None if c == "cat" else "red", "shape": c}
               for c in ("cat", "square", "circle")]
    per_image = [(f"img{i}", np.eye(3) * 2 + rng.normal(size=(3, 3)) * 0.01, objects)
                 for i in range(6)]
    got = measure(per_image)
    assert got["in_image_cosine"] == pytest.approx(0.0, abs=0.05)
    assert got["category_probe"] == 1.0 and got["category_chance"] == pytest.approx(1 / 3)
    assert got["colour_probe"] is None  # a single colour in training: nothing to probe
    assert got["rows"] == 18


def test_order_probes_read_position_from_rows_that_carry_it():
    """Rows that hold an object's centre and size linearly: the pair probes read left / above
    / larger; rows without them sit near chance (0.5); pairs closer than the margin are
    left out."""
    from benchmarks.probe_regions import order_pairs

    rng = np.random.default_rng(2)
    carrying, blind = [], []
    for i in range(60):
        objects, rows = [], []
        for _ in range(4):
            x, y, side = rng.uniform(10, 80), rng.uniform(10, 80), rng.uniform(10, 40)
            objects.append({"category": "cat", "colour": None, "shape": "cat",
                            "box": [x, y, x + side, y + side]})
            rows.append([x + side / 2, y + side / 2, side * side / 100, *rng.normal(size=3)])
        rows = np.array(rows)
        carrying.append((f"img{i}", rows, objects, 112))
        blind.append((f"img{i}", rng.normal(size=rows.shape), objects, 112))
    good, bad = measure(carrying), measure(blind)
    for order in ("left_of", "above", "larger"):
        assert good[f"{order}_probe"] > 0.95, (order, good)
        assert 0.3 < bad[f"{order}_probe"] < 0.7, (order, bad)
    # superlatives' margin: centres 4 % of the image width apart (4.48 px at 112, 8.96 at 224)
    near = [("img", np.eye(2), [{"box": [0, 0, 10, 10]}, {"box": [6, 0, 16, 10]}], 224)]
    assert order_pairs(near, "left_of") is None and order_pairs(near, "larger") is None
    assert order_pairs([near[0][:3] + (112,)], "left_of")[1] == ["yes", "no"]
    apart = [("img", np.eye(2), [{"box": [0, 0, 10, 10]}, {"box": [20, 0, 40, 20]}], 112)]
    diffs, labels = order_pairs(apart, "left_of")
    assert labels == ["yes", "no"] and diffs.tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    assert order_pairs(apart, "larger")[1] == ["no", "yes"]  # the second box is 4x the area
    assert order_pairs([apart[0][:3]], "left_of") is None  # no image width: no margin
    assert measure(blind[:1])["left_of_probe"] is None  # one image: no held-out half
