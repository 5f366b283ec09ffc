"""launch_testing test of launch/detector.launch.py (needs launch, launch_ros, launch_testing).

Skipped where those are not installed (they are not on PyPI). On a ROS 2 system, after building
the workspace::

    source scripts/ros_env.sh
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=57
    launch_test test/ros/test_detector_launch.py

(launch_testing's pytest plugin needs pytest < 9.) It starts the launch file with tiny random
models and a params file, waits for ``~/query_regions``, and checks a clean exit on shutdown.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import pytest

# (launch.actions, not launch: this repo's launch/ folder would pass as a namespace package.)
launch_testing = pytest.importorskip("launch_testing")
launch_ros = pytest.importorskip("launch_ros")
pytest.importorskip("launch.actions")

import launch  # noqa: E402

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "vlxseek_launch_test"


def _network_guard_problems():
    """Run conftest.py's guard, also under `launch_test` (which does not load conftest)."""
    spec = importlib.util.spec_from_file_location(
        "vlxseek_ros_test_guard", Path(__file__).resolve().parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ros_network_env_problems()


if _network_guard_problems():
    raise RuntimeError("refusing to launch nodes: " + "; ".join(_network_guard_problems()))


def _make_tiny_models(root: Path):
    model, proposer = root / "model", root / "proposer"
    for command, path in (("make-tiny-model", model), ("make-tiny-proposer", proposer)):
        subprocess.run([sys.executable, "-m", "vlxseek_core.cli", command, str(path)],
                       check=True, cwd=REPO, capture_output=True, timeout=300)
    params = root / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n"
        f"    proposal_model: \"{proposer}\"\n"
        "    max_new_tokens: 32\n")
    return model, params


@pytest.mark.launch_test
def generate_test_description():
    root = Path(tempfile.mkdtemp(prefix="vlxseek_launch_"))
    model, params = _make_tiny_models(root)
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "detector.launch.py")),
        launch_arguments={
            "model_path": str(model),
            "device": "cpu",
            "params_file": str(params),
            "namespace": NAMESPACE,
            "image_topic": f"/{NAMESPACE}/image",
            "log_level": "info",
        }.items(),
    )
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestDetectorComesUp(unittest.TestCase):
    def test_query_service_is_available(self):
        import rclpy
        from vlxseek_ros.srv import QueryRegions

        context = rclpy.Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("vlxseek_launch_probe", context=context)
            client = node.create_client(
                QueryRegions, f"/{NAMESPACE}/vlxseek_detector/query_regions")
            deadline = time.monotonic() + 180.0
            while not client.wait_for_service(timeout_sec=1.0):
                self.assertLess(time.monotonic(), deadline, "~/query_regions never appeared")
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)

    def test_network_guard_is_set(self):
        self.assertEqual(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"), "LOCALHOST")
        self.assertTrue(os.environ.get("ROS_DOMAIN_ID", "").isdigit())


@launch_testing.post_shutdown_test()
class TestDetectorShutsDownCleanly(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info,
                                               [launch_testing.asserts.EXIT_OK])
