#!/usr/bin/env bash
# The GPU figures of issues 7 and 11 in one command, for a session lent a GPU machine (the `device` tool), whose
# Python has torch but not pycocotools / albumentations and which cannot see ../shared. On this machine first:
#
#   mkdir -p .gpu && cp -r ../shared/gpu-wheels ../shared/data/bccd .gpu/     # .gpu/ is git-ignored: carry it
#
# then run, with carry [".gpu"] and a timeout of 600 s:   OUT=$OUT bash benchmarks/gpu_session.sh
# It writes into $OUT: the throughput table (bench_train.py JSON), and for yolov5_ciou and yolov8_tal on BCCD
# (n, 640 px, batch 16, 100 epochs, from scratch, the two runs sharing the GPU as in docs/benchmarks.md) the
# results.json and history.jsonl. Record them in benchmarks/README.md and docs/benchmarks.md with date and device.
# Budget: ~1 min install + ~1 min throughput + ~4 min for the two BCCD runs on an H100/H200.
set -euo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/gpu-wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cat > .gpu/bccd.yaml <<'YAML'
format: voc
path: bccd
train: train
val: val
names: [RBC, WBC, Platelets]
YAML
# issue 11: s model, 640 px, batch 64, AMP, steady state; with the data pipeline (loader) and without (fixed)
for source in loader fixed; do
  python3 benchmarks/bench_train.py --device cuda --sizes s --img-size 640 --batch-size 64 --source $source \
    --workers 16 --steps 50 --warmup 10 --json "$OUT/train_gpu_$source.json" | tail -3
done
# issues 7 and 11: BCCD, n, 640 px, 100 epochs; yolov8_tal must reach 0.60 mAP50-95, YOLOv5n's wall time is 205 s
for preset in yolov5_ciou yolov8_tal; do
  python3 tools/train.py --cfg $preset --no-progress --run-dir "$OUT/$preset" \
    --set data.dataset=.gpu/bccd.yaml data.workers=7 train.epochs=100 train.eval_interval=10 train.batch_size=16 \
    > "$OUT/$preset.log" 2>&1 &
done
wait
for preset in yolov5_ciou yolov8_tal; do tail -2 "$OUT/$preset.log"; done
