#!/usr/bin/env bash
# Runs a command inside the project's environment: `scripts/env.sh python -m pytest`.
# Source-able too: `source scripts/env.sh` activates it in the current shell.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_venv=${SPARTAN_VENV:-$_root/.venv}
# shellcheck disable=SC1091
source "$_venv/bin/activate"
export AMENT_PREFIX_PATH="$_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export PYTHONUNBUFFERED=1
unset _root _venv
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then exec "$@"; fi
