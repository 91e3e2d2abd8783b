#!/usr/bin/env bash
# Creates (or brings up to date) the project's environment; safe to run any number of times.
#
# Without a ROS 2 install: a venv (.venv, or $SPARTAN_VENV) that *is* the ROS prefix, with ROS 2
# Kilted core from the PyPI ros-* wheels, spartan_interfaces built with CMake and installed into it,
# and spartan_ros installed editable with its pinned Python dependencies.
# With a sourced ROS 2 install (ROS_DISTRO set): the venv sees the system's rclpy and messages
# (--system-site-packages) and the interfaces are built against that install instead.
# A second run with nothing changed only compares a stamp and exits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SPARTAN_VENV:-$ROOT/.venv}
STAMP=$VENV/.spartan-setup-stamp
VOCAB_MD5=933b7abbbbde62c36f02f0e6ccde464f
log() { printf '[setup] %s\n' "$*"; }

# What the environment is built from: any change here triggers the slow path again.
inputs_hash() {
  (
    cd "$ROOT"
    cat scripts/setup.sh requirements/*.txt setup.py setup.cfg package.xml cmake/*.cmake \
      training/pyproject.toml
    find interfaces -type f | LC_ALL=C sort | xargs cat
    echo "ROS_DISTRO=${ROS_DISTRO:-}"
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

log "installing Python dependencies (first run: a few minutes)"
reqs=(-r "$ROOT/requirements/base.txt" -r "$ROOT/requirements/dev.txt" -r "$ROOT/requirements/fleet.txt")
if [[ -z ${ROS_DISTRO:-} ]]; then
  reqs+=(-r "$ROOT/requirements/ros.txt")
else
  log "ROS_DISTRO=$ROS_DISTRO is sourced: using its rclpy and messages"
fi
pip_install "${reqs[@]}"
# OpenAI's CLIP package carries the BPE vocabulary the tokenizer needs (and the reference tokenizer
# the tests compare against); its declared dependencies (torchvision) are not wanted.
pip_install --no-deps -r "$ROOT/requirements/vocab.txt"

log "placing the BPE vocabulary"
share=$VENV/share/spartan_ros
mkdir -p "$share"
"$PY" - "$share" "$VOCAB_MD5" <<'PYEOF'
import hashlib, importlib.util, pathlib, shutil, sys
dest, md5 = pathlib.Path(sys.argv[1]) / "bpe_simple_vocab_16e6.txt.gz", sys.argv[2]
spec = importlib.util.find_spec("clip")
src = pathlib.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
if hashlib.md5(src.read_bytes()).hexdigest() != md5:
    sys.exit(f"unexpected vocabulary checksum in {src}")
shutil.copyfile(src, dest)
PYEOF

log "building spartan_interfaces"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
build=$ROOT/build/spartan_interfaces
rm -rf "$build"
mkdir -p "$build"
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

log "installing spartan_ros and spartan_train (editable)"
pip_install --no-deps --no-build-isolation -e "$ROOT"
pip_install --no-deps --no-build-isolation -e "$ROOT/training"

"$VENV/bin/python" -c "import rclpy, spartan_interfaces.srv, torch, onnxruntime" \
  || { echo "set-up finished but imports fail" >&2; exit 1; }
echo "$want" >"$STAMP"
log "done: $VENV"
