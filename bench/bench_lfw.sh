#!/usr/bin/env bash
# LFW View 1 benchmark: DevTest pairs, plain and --flip, threshold by 10-fold CV and from DevTrain.
#   bash bench/bench_lfw.sh [LFW_DIR] [WEIGHTS_DIR]      (about 8 minutes on 2 CPU cores)
# Prints one JSON line per run on stdout; the human reports, progress and ROC paths go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
LFW=${1:-../shared/faces/lfw_dev}
WEIGHTS=${2:-weights}
OUT=bench/results
mkdir -p "$OUT"
for flip in False True; do
  tag=$([ "$flip" = True ] && echo flip || echo plain)
  python main.py --lfw_pairs "$LFW/pairsDevTest.txt" --lfw_dir "$LFW" --flip="$flip" --json \
    --weights_path "$WEIGHTS" --roc_png "$OUT/lfw_roc_cv_$tag.png"
  python main.py --lfw_pairs "$LFW/pairsDevTest.txt" --lfw_train_pairs "$LFW/pairsDevTrain.txt" --lfw_dir "$LFW" \
    --flip="$flip" --json --weights_path "$WEIGHTS" --roc_png "$OUT/lfw_roc_devtrain_$tag.png"
done
