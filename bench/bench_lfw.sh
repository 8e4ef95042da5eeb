#!/usr/bin/env bash
# LFW View 1 benchmark: DevTest pairs, plain and --flip, threshold by 10-fold CV and from DevTrain.
#   bash bench/bench_lfw.sh [LFW_DIR] [WEIGHTS_DIR] [MODELS]   (MODELS default "fused sface dlib"; ~10 min each)
# Prints one JSON line per run on stdout; the human reports, progress and ROC paths go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
LFW=${1:-../shared/faces/lfw_dev}
WEIGHTS=${2:-weights}
MODELS=${3:-fused sface dlib}
OUT=bench/results
mkdir -p "$OUT"
for model in $MODELS; do
  for flip in False True; do
    tag=$model-$([ "$flip" = True ] && echo flip || echo plain)
    python main.py --lfw_pairs "$LFW/pairsDevTest.txt" --lfw_train_pairs "$LFW/pairsDevTrain.txt" --lfw_dir "$LFW" \
      --model "$model" --flip="$flip" --json --pretrained --weights_path "$WEIGHTS" --roc_png "$OUT/lfw_roc_$tag.png"
  done
done
