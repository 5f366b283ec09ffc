#!/usr/bin/env bash
# Run the whole test suite (after scripts/setup.sh). ROS 2 processes started by the tests stay
# on this machine: discovery is limited to localhost and the run gets its own domain id.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
# shellcheck disable=SC1091
source "${REPO}/scripts/ros_env.sh" "${REPO}/.venv" || exit 1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${VLXSEEK_TEST_DOMAIN_ID:-$(( 20 + $$ % 80 ))}"
export PYTHONUNBUFFERED=1
# One pytest-xdist worker per core, at most 4 (each holds tiny models and a ROS domain of its
# own: test/conftest.py), whole files per worker (their module fixtures are built once);
# VLXSEEK_TEST_WORKERS=0: one process. --durations: the slowest tests, where to look when the
# run grows past its ~20 minutes.
cores="$(nproc 2>/dev/null || echo 1)"
workers="${VLXSEEK_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
python -m pytest test -q -p no:cacheprovider -n "${workers}" --dist loadfile --durations=20 "$@"
rc=$?
# pytest exits 5 when it collected nothing: that is a failure of this script, not a pass.
[[ ${rc} -eq 5 ]] && echo "test.sh: no tests were collected" >&2
# Style (setup.cfg [flake8]: 99 columns), after the tests so that a long line never hides a
# test result; it fails the script all the same.
if ! python -m flake8; then
  echo "test.sh: flake8 found style errors (above)" >&2
  [[ ${rc} -eq 0 ]] && rc=1
fi
exit ${rc}
