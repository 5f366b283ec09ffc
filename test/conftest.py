"""Isolation of parallel test workers (``scripts/test.sh`` runs pytest-xdist, one worker per
core, whole files per worker).

Loaded before the conftest files below it and before any test module imports torch or rclpy,
so what it sets holds in every worker and in every process a test starts:

* each worker gets its own ``ROS_DOMAIN_ID`` (from the run's own one, kept in 20-99): the
  nodes, topics and services of two workers' tests never see each other;
* each worker runs torch on one thread (``OMP_NUM_THREADS=1`` unless set): N workers on N
  cores, not N workers of N threads fighting over them.
"""
import os

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist

if _WORKER.startswith("gw"):
    _index = int(_WORKER[2:])
    _base = os.environ.get("ROS_DOMAIN_ID", "")
    if _base.strip().isdigit():  # without one the ROS tests refuse to run (test/ros/conftest)
        os.environ["ROS_DOMAIN_ID"] = str(20 + (int(_base) - 20 + _index) % 80)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "long: a file whose tests take minutes; its tests are scheduled first")


def pytest_collection_modifyitems(config, items):
    """Files marked ``long`` first (stable otherwise): xdist hands out whole files in
    collection order, and a long file handed out last would run on after the rest is done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
