#!/usr/bin/env bash
# Rebuilds assets/models/tiny-synth, the trained `tiny` checkpoint the demo and the end-to-end
# test use, from nothing but this project (about 2 h on 2 CPU cores; each stage is kept, so a
# re-run skips what is done). Stages:
#   1. from scratch on generated drives (seed 0): the learning benchmark's with-pose model;
#   2. fine-tune for the node's task on the same drives: batches of 4 far-apart windows per
#      drive and the own-motion loss term (each caption against the clips of its batch, every
#      clip fused with its own motion, as the node scores its memory);
#   3. the same on a second generated set with other towns (seed 5);
#   4. store the weights as float16 safetensors (half the size; they load as float32).
# The drives the demo, the tests and bench.drive_retrieval use (seeds 7, 11, 21) are never trained on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-runs}
out=${OUT:-assets/models/tiny-synth}
bash scripts/setup.sh
env=(scripts/env.sh)
finetune=(--batch-size 32 --frames 4 --drive-group 4 --own-motion 1 --warmup 20
          --epochs 1000 --no-progress --keep 3)

# 1. from scratch, 20 min (and the no-pose ablation beside it: the learning benchmark)
[[ -f $runs/learning/pose/last/model.safetensors ]] ||
  "${env[@]}" python -m bench.learning --out "$runs/learning"

# 2. the node's task on the seed-0 drives, 30 min
[[ -f $runs/tiny-stage2/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/learning/data" --init "$runs/learning/pose/last" \
    --out "$runs/tiny-stage2" --overwrite --lr 2e-4 --schedule-steps 1000 --max-minutes 30 \
    --cache-dir "$runs/cache" "${finetune[@]}"

# 3. more towns: 60 drives of seed 5, 50 min
[[ -f $runs/synth-s5/meta/dataset.json ]] ||
  "${env[@]}" spartan-synth --out "$runs/synth-s5" --seed 5 --sequences 60 --frames 400 --workers 2
[[ -f $runs/tiny-stage3/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s5" --init "$runs/tiny-stage2/last" \
    --out "$runs/tiny-stage3" --overwrite --lr 1e-4 --schedule-steps 1600 --max-minutes 50 \
    --cache-dir "$runs/cache" "${finetune[@]}"

# 4. float16 weights + config into $out
"${env[@]}" python - "$runs/tiny-stage3/last" "$out" <<'EOF'
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
tensors = {k: v.half() if v.is_floating_point() else v
           for k, v in load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.safetensors")
shutil.copy(src / "config.json", dst / "config.json")
print(f"wrote {dst}: {sum(t.numel() for t in tensors.values()) / 1e6:.1f}M parameters, float16")
EOF

# How it does on unseen drives, side by side with where it started
"${env[@]}" python -m bench.drive_retrieval "$runs/learning/pose/last" "$out" \
  --out "$runs/drive_retrieval"
