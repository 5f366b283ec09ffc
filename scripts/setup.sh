#!/usr/bin/env bash
# One command for a fresh machine of this project's kind (Linux, CPython 3.11, no ROS apt repo):
#   1. creates .venv and installs torch, this package (editable) and its test extras;
#   2. installs ROS 2 Kilted from PyPI wheels and colcon-builds the interfaces
#      (scripts/setup_ros.sh);
#   3. runs the main job once: a tiny random checkpoint and proposal detector are written to
#      .tiny_models/ and `vlxseek query` answers "person; flag" on skimage's astronaut photo.
#      Then scripts/demo_scene.sh: the trained scene model on a held-out scene (skipped while
#      none is committed).
# Idempotent. Users with a real ROS 2 install follow README.md instead.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-python3.11}"
command -v "${PYTHON}" >/dev/null || PYTHON=python3
VENV="${REPO}/.venv"

[[ -x "${VENV}/bin/python" ]] || "${PYTHON}" -m venv "${VENV}"
PIP=("${VENV}/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip wheel setuptools
# torch first, pinned to the builds that lie on this machine's disk (see the env notes);
# elsewhere any torch>=2.4 works.
case "$(uname -m)" in
  x86_64) "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 ;;
  aarch64) "${PIP[@]}" torch==2.9.1 torchvision==0.24.1 ;;
  *) "${PIP[@]}" torch torchvision ;;
esac
"${PIP[@]}" -e ".[test,draw,eval,train,track]"
# the tracker without its opencv-python pin (see setup.cfg, extra "track")
"${PIP[@]}" --no-deps "trackers>=2.6,<3"

bash "${REPO}/scripts/setup_ros.sh" "${VENV}"

bash "${REPO}/scripts/demo.sh"
# the trained scene model on a held-out scene (skipped while no trained model is committed)
bash "${REPO}/scripts/demo_scene.sh"
