"""Guards for the ROS tests: DDS traffic of a test run must never leave this machine.

Every rclpy process these tests start (in-process or as a subprocess) inherits this environment,
so every test here fails (before any node starts) unless
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and an explicit ``ROS_DOMAIN_ID`` are set *before*
pytest starts, e.g.::

    source scripts/ros_env.sh
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=57 python -m pytest test/ros -q
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Fast DDS drops best-effort samples above ~512 KB with its default buffers (the test photo is
# 768 KB): use the profile shipped for that in every rclpy process of the tests (set before any
# participant exists; subprocesses inherit it). Users of the node choose it themselves.
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE",
    str(Path(__file__).resolve().parents[2] / "config" / "fastdds_large_images.xml"))


def ros_network_env_problems() -> list:
    """Return what is wrong with the DDS network guard of this environment (empty = fine)."""
    problems = []
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        problems.append("ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST (it is %r)"
                        % os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"))
    domain = os.environ.get("ROS_DOMAIN_ID", "")
    if not domain.strip().isdigit():
        problems.append("ROS_DOMAIN_ID must be set to this run's own domain (it is %r)"
                        % (domain or None))
    return problems


@pytest.fixture(scope="session", autouse=True)
def ros_network_guard():
    """Fail every test in test/ros, before any rclpy fixture runs, without the network guard.

    Session-scoped and autouse, so it runs before the module-scoped fixtures that start nodes.
    """
    problems = ros_network_env_problems()
    if problems:
        pytest.fail(
            "refusing to run the ROS tests, DDS discovery could leave this machine:\n  "
            + "\n  ".join(problems)
            + "\nrun e.g.: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=57 "
              "python -m pytest test/ros", pytrace=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Make a tiny random VLM-FO1 checkpoint and proposal detector once per run.

    Made by the core CLI; returns ``(model_dir, proposer_dir)``.
    """
    root = tmp_path_factory.mktemp("tiny")
    model, proposer = root / "model", root / "proposer"
    repo = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-m", "vlxseek_core.cli", cmd, str(out)],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for cmd, out in (("make-tiny-model", model), ("make-tiny-proposer", proposer))]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out
    return model, proposer


@pytest.fixture
def fake():
    """A fresh fake pipeline (``node_harness.FakePipeline``) recording every query."""
    from node_harness import FakePipeline
    return FakePipeline()


@pytest.fixture
def harness(fake):
    """The plain node around ``fake``, spun in a thread with a peer node and a client."""
    from node_harness import Harness
    h = Harness(fake)
    yield h
    h.close()
