#!/usr/bin/env bash
# The GPU figures of issues 9 and 11 in one command, for a session lent a GPU machine (the `device` tool), whose
# Python has torch but not pycocotools / albumentations and which cannot see ../shared. On this machine first:
#
#   mkdir -p .gpu && cp -r ../shared/gpu-wheels ../shared/data/bccd .gpu/     # .gpu/ is git-ignored: carry it
#
# then run, with carry [".gpu"] and a timeout of 600 s:   OUT=$OUT bash benchmarks/gpu_session.sh
# Stages, each bounded so that what finished comes back:
#   1. smoke: a training step of every preset under CUDA float16 AMP; a 2-run ablation grid (1 epoch, 16 images, two processes sharing the GPU) through the code path of
#      stage 2 (cached images, spawned run processes, pycocotools); on failure the script stops there (a CUDA bug costs a minute, not the lease);
#   2. issue 9: configs/ablations/iou_family_bccd_gpu.yaml (5 box losses x 3 seeds, n, 640 px, 50 epochs), 5 runs
#      at a time, until DEADLINE_ABLATE seconds after the start; its run folders come back without checkpoints,
#      one archive per variant, and `tools/ablate.py --summary-only` rebuilds the report anywhere;
#   3. issue 11: training throughput of the s model at 640 px, batch 64, AMP, from fixed batches and from the
#      loader (16 workers, images cached in memory), with the numpy (OpenCV in the workers) and the torch
#      augmentation backends (pixels drawn on the GPU, data.augment_backend); then the fixed batches with
#      train.compile (torch.compile of the model), if the lease has time left.
# Out: gpu.txt (machine, versions, the tables), meta.tgz (bench JSON, logs, the ablation's own files),
# ablate_<variant>.tgz. Record them in benchmarks/README.md, docs/benchmarks.md, docs/ablation.md.
set -uo pipefail
OUT=${OUT:-runs/gpu}
DEADLINE_ABLATE=${DEADLINE_ABLATE:-400}
T0=$(date +%s)
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/gpu-wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "cpus $(nproc)";
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } \
  | tee "$OUT/gpu.txt"
printf 'format: voc\npath: bccd\ntrain: train\nval: val\nnames: [RBC, WBC, Platelets]\n' > .gpu/bccd.yaml
SPEC=configs/ablations/iou_family_bccd_gpu.yaml
pack() {  # what came back of the ablation, whatever happened
  tar czf "$OUT/meta.tgz" -C runs logs $(cd runs && ls -d ablate/iou_family_bccd_gpu/*.* 2>/dev/null)
  for v in ciou iou giou diou eiou; do
    [ -d runs/ablate/iou_family_bccd_gpu/$v ] && tar czf "$OUT/ablate_$v.tgz" --exclude='*.pt' -C runs/ablate/iou_family_bccd_gpu $v
  done
  ls -la "$OUT"
}
trap pack EXIT

echo "== 1. smoke $(( $(date +%s) - T0 )) s"
# a training step of every preset under CUDA float16 AMP (the sparse row gradients through to_dtype, each criterion)
timeout 90 python3 benchmarks/bench_train.py --smoke --device cuda --json runs/logs/presets_amp.json \
  --preset $(ls configs/*.yaml | xargs -n1 basename | sed 's/\.yaml$//' | grep -v '^demo$') 2>&1 \
  | grep -E "^\| train step|Error" | cut -c1-60 | tee -a "$OUT/gpu.txt"
timeout 150 python3 tools/ablate.py --cfg yolov5_ciou --vary loss.box=ciou,giou --no-progress --jobs 2 --threads 2 \
  --seeds 0 --out runs/ablate/smoke --set data.dataset=.gpu/bccd.yaml data.max_images=16 data.cache_images=true \
  data.workers=3 train.epochs=1 > runs/logs/smoke.log 2>&1
rc=$?
tail -25 runs/logs/smoke.log
if [ $rc -ne 0 ]; then echo "smoke failed (rc $rc): stopping"; exit 3; fi

echo "== 2. ablation $(( $(date +%s) - T0 )) s"
left=$(( DEADLINE_ABLATE - ($(date +%s) - T0) ))
timeout $left python3 tools/ablate.py --spec $SPEC --no-progress --jobs 5 --threads 2 \
  --set data.dataset=.gpu/bccd.yaml > runs/logs/ablate.log 2>&1
echo "ablation rc $? after $(( $(date +%s) - T0 )) s"
pkill -9 -f multiprocessing; pkill -9 -f tools/ablate.py; sleep 2   # run processes a timeout left behind
grep -E "finished|failed|skipped|^\|" runs/logs/ablate.log | tail -30

echo "== 3. throughput $(( $(date +%s) - T0 )) s"
for run in "fixed numpy" "loader numpy" "loader torch"; do
  set -- $run
  timeout 60 python3 benchmarks/bench_train.py --device cuda --sizes s --img-size 640 --batch-size 64 --source $1 \
    --workers 16 --steps 30 --warmup 8 --set data.cache_images=true data.augment_backend=$2 \
    --json runs/logs/train_gpu_$1_$2.json 2>&1 | tail -4 | tee -a "$OUT/gpu.txt"
done
# train.compile last: inductor compiles for minutes, so what it leaves of the lease decides whether it finishes
timeout 150 python3 benchmarks/bench_train.py --device cuda --sizes s --img-size 640 --batch-size 64 --source fixed \
  --steps 30 --warmup 8 --set train.compile=true --json runs/logs/train_gpu_fixed_compiled.json 2>&1 | tail -4 \
  | tee -a "$OUT/gpu.txt"
echo "== done $(( $(date +%s) - T0 )) s"
