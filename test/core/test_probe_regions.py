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
