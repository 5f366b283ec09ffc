# shellcheck shell=bash
# Source this file (bash) to use the ROS 2 wheels and the workspace built by setup_ros.sh:
#
#   source scripts/ros_env.sh [VENV]     (default: $VIRTUAL_ENV, else <repo>/.venv)
#
# It activates VENV, sources <repo>/.ros_ws/install/setup.bash and puts the wheels' native
# libraries and install/lib on LD_LIBRARY_PATH. It does not set ROS_DOMAIN_ID or
# ROS_AUTOMATIC_DISCOVERY_RANGE: choose those for your network (tests here require
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and their own ROS_DOMAIN_ID).

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
  echo "ros_env.sh must be sourced: source ${0}" >&2
  exit 2
fi

_vlx_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_vlx_venv="${1:-${VIRTUAL_ENV:-${_vlx_repo}/.venv}}"
_vlx_install="${_vlx_repo}/.ros_ws/install"

if [[ ! -x "${_vlx_venv}/bin/python" ]]; then
  echo "ros_env.sh: no virtual environment at ${_vlx_venv}" >&2
  return 1
fi
if [[ ! -f "${_vlx_install}/setup.bash" ]]; then
  echo "ros_env.sh: ${_vlx_install} is missing; run scripts/setup_ros.sh ${_vlx_venv}" >&2
  return 1
fi

if [[ "${VIRTUAL_ENV:-}" != "${_vlx_venv}" ]]; then
  # shellcheck disable=SC1091
  source "${_vlx_venv}/bin/activate"
fi

_vlx_site="$("${_vlx_venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# Native libraries of the wheels (what the wheels' .pth hook would add by re-executing Python).
_vlx_ld="${_vlx_install}/lib:${_vlx_venv}/lib"
for _vlx_d in "${_vlx_site}"/ros_*.libs; do
  [[ -d "${_vlx_d}" ]] && _vlx_ld="${_vlx_ld}:${_vlx_d}"
done
export LD_LIBRARY_PATH="${_vlx_ld}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
# Tell the wheels' .pth hook that LD_LIBRARY_PATH is already set (saves a re-exec per start).
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1

# The wheels install ROS packages into the venv prefix; make them visible to the ament index.
case ":${AMENT_PREFIX_PATH:-}:" in
  *":${_vlx_venv}:"*) ;;
  *) export AMENT_PREFIX_PATH="${_vlx_venv}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}" ;;
esac
case ":${CMAKE_PREFIX_PATH:-}:" in
  *":${_vlx_venv}:"*) ;;
  *) export CMAKE_PREFIX_PATH="${_vlx_venv}${CMAKE_PREFIX_PATH:+:${CMAKE_PREFIX_PATH}}" ;;
esac

# colcon's setup.bash prepends install/ to AMENT_PREFIX_PATH, PYTHONPATH, CMAKE_PREFIX_PATH,
# LD_LIBRARY_PATH. It is not written for `set -u`; relax it while sourcing.
_vlx_had_u=0
[[ $- == *u* ]] && _vlx_had_u=1 && set +u
# shellcheck disable=SC1091
source "${_vlx_install}/setup.bash"
[[ ${_vlx_had_u} == 1 ]] && set -u

export VLXSEEK_ROS_INSTALL="${_vlx_install}"
unset _vlx_repo _vlx_venv _vlx_install _vlx_site _vlx_ld _vlx_d _vlx_had_u
