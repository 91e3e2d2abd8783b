#!/usr/bin/env bash
# Rebuilds assets/models/tiny-synth, the trained `tiny` checkpoint the demo and the end-to-end
# test use, from nothing but this project, with the recipe and step counts of the committed
# weights (about 2 h of the 2 CPU cores, then an hour for the test figures; each stage is kept,
# so a re-run skips what is done). Stages:
#   1. from scratch on 40 generated drives of seed 0 with the reference loss (501 steps: what the
#      learning benchmark of then made in 20 min of one core, on a cosine of 650);
#   2. fine-tune for the node's task on the same drives: batches of 4 far-apart windows per
#      drive and the own-motion loss term (each caption against the clips of its batch, every
#      clip fused with its own motion, as the node scores its memory);
#   3./4. the same on two more generated sets with other towns (seeds 5 and 9);
#   5. the same on towns with more gas stations (seed 3), whose captions name every gas station
#      in view;
#   6. store the weights as float16 safetensors (half the size; they load as float32).
# Stages 2 and 5 start from a float16 copy of the stage before, as the committed weights did.
# A re-run trains the same way on drives of the same seeds; its weights are not bit-identical to
# the committed ones (thread scheduling and library versions change the order of float sums).
# Seeds follow the evaluation protocol (training/spartan_train/protocol.py, docs/evaluation.md):
# training seeds 0, 3, 5, 9; every stage length here was chosen on the selection drives (seeds 7,
# 11, 17, 21: the demo's and the tests'); the figures to report come from the test drives only.
# Step counts, not time budgets, so a re-run is the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-runs}
out=${OUT:-assets/models/tiny-synth}
bash scripts/setup.sh
env=(scripts/env.sh)
finetune=(--batch-size 32 --frames 4 --drive-group 4 --own-motion 1 --warmup 20
          --epochs 1000 --no-progress --keep 3)

half_copy() {  # half_copy SRC DST: SRC's weights as float16 (and its config) into DST
  "${env[@]}" python - "$1" "$2" <<'EOF'
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
}

# 1. from scratch: 40 drives of seed 0 (5 towns), reference loss, random batches, ~20 min
[[ -f $runs/synth-s0-40/meta/dataset.json ]] ||
  "${env[@]}" spartan-synth --out "$runs/synth-s0-40" --seed 0 --sequences 40 --frames 400 \
    --workers 2
[[ -f $runs/tiny-stage1/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s0-40" --init tiny --out "$runs/tiny-stage1" \
    --overwrite --batch-size 32 --frames 4 --warmup 50 --schedule-steps 650 --max-steps 501 \
    --epochs 1000 --no-progress --keep 3 --cache-dir "$runs/cache"
[[ -f $runs/tiny-stage1/half/model.safetensors ]] ||
  half_copy "$runs/tiny-stage1/last" "$runs/tiny-stage1/half"

# 2. the node's task on the same drives, ~30 min
[[ -f $runs/tiny-stage2/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s0-40" --init "$runs/tiny-stage1/half" \
    --out "$runs/tiny-stage2" --overwrite --lr 2e-4 --schedule-steps 1000 --max-steps 1116 \
    --cache-dir "$runs/cache" "${finetune[@]}"

# 3. and 4. more towns: 60 drives of seed 5, then 60 of seed 9, 8 epochs each (~15 min each;
#    longer on one set overfits it: after 26 epochs on seed 5 the unseen-drive R@5 had fallen
#    from 0.71 at epoch 8 to 0.66)
for seed in 5 9; do
  [[ -f $runs/synth-s$seed/meta/dataset.json ]] ||
    "${env[@]}" spartan-synth --out "$runs/synth-s$seed" --seed $seed --sequences 60 \
      --frames 400 --workers 2
done
[[ -f $runs/tiny-stage3/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s5" --init "$runs/tiny-stage2/last" \
    --out "$runs/tiny-stage3" --overwrite --lr 1e-4 --schedule-steps 1600 --max-steps 680 \
    --cache-dir "$runs/cache" "${finetune[@]}"
[[ -f $runs/tiny-stage4/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s9" --init "$runs/tiny-stage3/last" \
    --out "$runs/tiny-stage4" --overwrite --lr 1e-4 --schedule-steps 1600 --max-steps 690 \
    --cache-dir "$runs/cache" "${finetune[@]}"

# 5. gas stations: 60 drives of seed 3 in towns with 6 gas stations each (2 by default), every
#    window with one in view saying so in its caption; 344 steps (4 epochs, ~10 min), chosen on
#    the selection drives among 172, 344, 516 and 680 (docs/evaluation.md)
[[ -f $runs/synth-s3-gas6/meta/dataset.json ]] ||
  "${env[@]}" spartan-synth --out "$runs/synth-s3-gas6" --seed 3 --sequences 60 --frames 400 \
    --workers 2 --name-landmarks --gas-stations 6
[[ -f $runs/tiny-stage4/half/model.safetensors ]] ||
  half_copy "$runs/tiny-stage4/last" "$runs/tiny-stage4/half"
[[ -f $runs/tiny-stage5/last/model.safetensors ]] ||
  "${env[@]}" spartan-train --data "$runs/synth-s3-gas6" --init "$runs/tiny-stage4/half" \
    --out "$runs/tiny-stage5" --overwrite --lr 1e-4 --schedule-steps 1600 --max-steps 344 \
    --cache-dir "$runs/cache" "${finetune[@]}"

# 6. float16 weights + config into $out
half_copy "$runs/tiny-stage5/last" "$out"

# How it does on the test drives (the figures to report), side by side with where it started
"${env[@]}" python -m bench.drive_retrieval "$runs/tiny-stage1/last" "$out" \
  --set test --out "$runs/drive_retrieval"
"${env[@]}" python -m bench.path_picks "$out" --set test --out "$runs/path_picks"
