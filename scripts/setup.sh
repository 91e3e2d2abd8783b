#!/usr/bin/env bash
# Creates (or brings up to date) the project's environment; safe to run any number of times.
#
#   bash scripts/setup.sh               development: vehicle runtime, desk tools, trainer, tests
#   bash scripts/setup.sh --vehicle     the vehicle runtime only (no torch, matplotlib, evo)
#   add --gpu                           onnxruntime-gpu instead of onnxruntime (never both)
#   add --interfaces-from PREFIX        copy spartan_interfaces from another environment made by
#                                       this script with the same ROS wheels and Python (fast CI)
#
# Without a ROS 2 install: a venv (.venv, or $SPARTAN_VENV) that *is* the ROS prefix, with ROS 2
# Kilted core from the PyPI ros-* wheels, spartan_interfaces built with CMake and installed into it,
# and spartan_ros (editable; a regular install with --vehicle) with its pinned Python dependencies.
# The prefix also gets what `ros2 run` / `ros2 launch` look for, as a colcon install has it: the
# ament index entry, share/spartan_ros/{package.xml,launch,config} and lib/spartan_ros/<executable>.
# With a sourced ROS 2 install (ROS_DISTRO set): the venv sees the system's rclpy and messages
# (--system-site-packages) and the interfaces are built against that install instead.
# A second run with nothing changed only compares a stamp and exits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SPARTAN_VENV:-$ROOT/.venv}
STAMP=$VENV/.spartan-setup-stamp
MODE=dev
RUNTIME=vehicle.txt
INTERFACES_FROM=
while (($#)); do
  case $1 in
    --vehicle) MODE=vehicle ;;
    --gpu) RUNTIME=vehicle-gpu.txt ;;
    --interfaces-from) INTERFACES_FROM=$(cd "${2:?--interfaces-from needs a prefix}" && pwd); shift ;;
    *) echo "usage: scripts/setup.sh [--vehicle] [--gpu] [--interfaces-from PREFIX]" >&2; exit 2 ;;
  esac
  shift
done
log() { printf '[setup %(%T)T] %s\n' -1 "$*"; }

# What the environment is built from: any change here triggers the slow path again.
inputs_hash() {
  (
    cd "$ROOT"
    cat scripts/setup.sh requirements/*.txt setup.py setup.cfg package.xml cmake/*.cmake \
      training/pyproject.toml resource/spartan_ros launch/*.launch.py config/*.yaml \
      spartan_ros/dds/fastdds.xml
    find interfaces -type f | LC_ALL=C sort | xargs cat
    echo "ROS_DISTRO=${ROS_DISTRO:-} MODE=$MODE RUNTIME=$RUNTIME"
  ) | sha256sum | cut -d' ' -f1
}
want=$(inputs_hash)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" && -x $VENV/bin/python ]]; then
  log "environment up to date ($VENV)"
  exit 0
fi

pick_python() {
  if [[ -n ${ROS_DISTRO:-} ]]; then command -v python3; return; fi
  # The ROS 2 wheels on PyPI are built for CPython 3.11.
  for p in "${PYTHON:-}" python3.11 python3; do
    [[ -n $p ]] && command -v "$p" >/dev/null 2>&1 || continue
    if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then command -v "$p"; return; fi
  done
  echo "spartan_ros set-up needs Python 3.11 (the ROS 2 wheels on PyPI are cp311); set PYTHON=..." >&2
  exit 1
}

if [[ ! -x $VENV/bin/python ]]; then
  py=$(pick_python)
  log "creating venv at $VENV with $py"
  if [[ -n ${ROS_DISTRO:-} ]]; then
    "$py" -m venv --system-site-packages "$VENV"
  else
    "$py" -m venv "$VENV"
  fi
fi
PY=$VENV/bin/python
pip_install() {
  # pip warns about this machine's optional local indexes; keep the log readable.
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  return "${PIPESTATUS[0]}"
}

log "installing Python dependencies ($MODE, $RUNTIME; first run: a few minutes)"
# onnxruntime and onnxruntime-gpu share one import name: switching drops the other one first.
other=onnxruntime-gpu
[[ $RUNTIME == vehicle-gpu.txt ]] && other=onnxruntime
if "$PY" -m pip show -q "$other" >/dev/null 2>&1; then
  "$PY" -m pip uninstall -y -q "$other"
fi
reqs=(-r "$ROOT/requirements/$RUNTIME")
if [[ $MODE == dev ]]; then
  reqs+=(-r "$ROOT/requirements/desk.txt" -r "$ROOT/requirements/train.txt"
         -r "$ROOT/requirements/dev.txt"
         -r "$ROOT/requirements/fleet.txt")
fi
if [[ -z ${ROS_DISTRO:-} ]]; then
  reqs+=(-r "$ROOT/requirements/ros.txt")
else
  log "ROS_DISTRO=$ROS_DISTRO is sourced: using its rclpy and messages"
fi
pip_install "${reqs[@]}"
if [[ $MODE == dev ]]; then
  # OpenAI's reference tokenizer and model, the tests' oracles; its declared dependencies
  # (torchvision) are not wanted.
  pip_install --no-deps -r "$ROOT/requirements/vocab.txt"
fi

export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# The files of the interfaces' install, kept so that another environment can copy them.
MANIFEST=.spartan-interfaces-manifest
if [[ -n $INTERFACES_FROM ]]; then
  log "copying spartan_interfaces from $INTERFACES_FROM"
  [[ -f $INTERFACES_FROM/$MANIFEST ]] || { echo "$INTERFACES_FROM has no $MANIFEST" >&2; exit 1; }
  (cd "$INTERFACES_FROM" && sed "s|^$INTERFACES_FROM/||" "$MANIFEST" |
     xargs cp -p --parents -t "$VENV")
  sed "s|^$INTERFACES_FROM/|$VENV/|" "$INTERFACES_FROM/$MANIFEST" >"$VENV/$MANIFEST"
else
  log "building spartan_interfaces"
  build=$(mktemp -d "${TMPDIR:-/tmp}/spartan_interfaces-build.XXXXXX")
  trap 'rm -rf "$build"' EXIT
  (
    cd "$build"
    source "$VENV/bin/activate"
    cmake "$ROOT/interfaces/spartan_interfaces" -DPython3_EXECUTABLE="$PY" \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/fix_wheel_include_dirs.cmake" >cmake.log 2>&1 \
      || { tail -40 cmake.log; exit 1; }
    cmake --build . -j "$(nproc)" >build.log 2>&1 || { tail -40 build.log; exit 1; }
    cmake --install . >install.log 2>&1 || { tail -40 install.log; exit 1; }
  )
  cp "$build/install_manifest.txt" "$VENV/$MANIFEST"
fi

if [[ $MODE == dev ]]; then
  log "installing spartan_ros and spartan_train (editable)"
  pip_install --no-deps --no-build-isolation -e "$ROOT"
  pip_install --no-deps --no-build-isolation -e "$ROOT/training"
  probe="import rclpy, spartan_interfaces.srv, torch, onnxruntime, spartan_train"
else
  log "installing spartan_ros"
  pip_install --no-deps --force-reinstall "$ROOT"
  probe="import rclpy, spartan_interfaces.srv, onnxruntime, spartan_ros.node.spartan_node"
fi

# What `ros2 run` and `ros2 launch` look for in a prefix (colcon's ament_python layout): real
# files, not links (a linked launch folder is not found), and one executable per entry point.
log "adding spartan_ros to the ROS prefix (ament index, share/spartan_ros, lib/spartan_ros)"
share=$VENV/share/spartan_ros
rm -rf "$share/launch" "$share/config" "$VENV/lib/spartan_ros"
install -D -m 644 "$ROOT/resource/spartan_ros" \
  "$VENV/share/ament_index/resource_index/packages/spartan_ros"
install -D -m 644 "$ROOT/package.xml" "$share/package.xml"
install -D -m 644 -t "$share/launch" "$ROOT"/launch/*.launch.py
install -D -m 644 -t "$share/config" "$ROOT"/config/*.yaml "$ROOT"/spartan_ros/dds/fastdds.xml
"$PY" - "$PY" "$VENV/lib/spartan_ros" <<'PYEOF'
import os, sys
from importlib.metadata import distribution
python, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
for ep in distribution("spartan_ros").entry_points.select(group="console_scripts"):
    path = os.path.join(dest, ep.name)
    with open(path, "w") as f:
        f.write(f"#!{python}\n# `ros2 run spartan_ros {ep.name}` (written by scripts/setup.sh)\n"
                f"import sys\nfrom {ep.module} import {ep.attr}\nsys.exit({ep.attr}())\n")
    os.chmod(path, 0o755)
PYEOF

"$VENV/bin/python" -c "$probe" || { echo "set-up finished but imports fail" >&2; exit 1; }
echo "$want" >"$STAMP"
log "done: $VENV"
