"""vlxseek_core must work without ROS: importing every module never imports rclpy."""
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "vlxseek_core"


def test_core_modules_do_not_import_rclpy():
    modules = sorted("vlxseek_core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
                     for p in CORE.rglob("*.py") if p.name != "__init__.py")
    assert "vlxseek_core.pipeline" in modules and len(modules) > 15
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'vision_msgs', 'vlxseek_ros'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(CORE.parent), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
