#!/usr/bin/env bash
# Self-training with the fine-tuned LiteMedSAM on a GPU, no true mask used for training:
#   round 1: 08 --architecture litemedsam on 07's candidate-box pseudo-labels;
#   07 --prompt unet: the round-1 model's largest blob gives each tumour slice its SAM prompt box;
#   round 2: 08 again on those labels. Each 08 is scored on the test part against the true masks.
#
# Usage: bench/gpu_selftrain.sh IN_04_DIR IN_07_DIR OUT_DIR MINUTES_ROUND1 MINUTES_ROUND2
# Writes OUT_DIR/08_round1, 07_round2, 08_round2 and a log per step. ARGS (environment) is added
# to both 08 commands, e.g. ARGS="--refine sam".
set -eu
in04=$1 in07=$2 out=$3 minutes1=$4 minutes2=$5
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
mkdir -p "$out"
train() {  # train IN OUT MINUTES
  "$python" scripts/08_unet_train.py --in "$1" --out "$2" --masks pseudo --architecture litemedsam \
    --epochs 1000 --patience 40 --time-budget "$3" ${ARGS:-} >"$2.log" 2>&1
  grep -A3 "^08_unet_train" "$2.log"
}
train "$in07" "$out/08_round1" "$minutes1"
"$python" scripts/07_sam_label.py --in "$in04" --out "$out/07_round2" --prompt unet --unet "$out/08_round1" \
  >"$out/07_round2.log" 2>&1
grep -A3 "^07_sam_label" "$out/07_round2.log" || tail -3 "$out/07_round2.log"
train "$out/07_round2" "$out/08_round2" "$minutes2"
