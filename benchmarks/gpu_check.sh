#!/usr/bin/env bash
# The GPU check: what a CPU box cannot show, in one run of under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [--out DIR] [--dry-run]
#
# Stages (each with its own time limit; a failed stage does not stop the others):
#   1. pytest -m gpu                 the gpu-marked tests (CUDA twins of the engine tests, no per-step sync)
#   2. python -m engine bench        resnet32 batch 128 on CUDA: auto (bf16), fp16 (scaled), fp32; Model Doctor step
#   3. DDP smoke test                2 ranks through torchrun on a tiny config (only with 2+ GPUs)
#   4. CIFAR-10-LT-shaped run        resnet32, batch 128, 200 epochs on synthetic 32-px data
#                                    (12,406 train images at imbalance 100, 10,000 test), timed
# Every figure is printed as one JSON line next to its target; the last line sums the stages up.
# --dry-run writes and validates the generated run configs (the engine's own validation) and exits:
# it needs no GPU, and the test suite runs it. Without --dry-run and without a CUDA device the script
# says so and exits 3 at once.
set -uo pipefail

PYTHON=${PYTHON:-python}
OUT=""
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (use --out DIR, --dry-run)" >&2; exit 2 ;;
    esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/mdtui-gpu-check.XXXXXX")}
mkdir -p "$OUT" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset MDTUI_FAKE_GPUS  # pretend GPUs would make the engine train on the CPU

# ------------------------------------------------------------------------------ configs
# Writes OUT/<name>/config.json for each run and validates it as the engine will (exit 2 if invalid).
"$PYTHON" - "$OUT" <<'PY' || { echo "gpu_check: the generated configs do not validate" >&2; exit 2; }
import json, sys
from pathlib import Path
from engine.data.longtail import longtail_counts
from engine.schema.config import to_dict
from engine.schema.validate import ConfigError, from_dict

out = Path(sys.argv[1])
common = {"model": "resnet32", "device": "cuda", "precision": "auto", "batch_size": 128,
          "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4},
          "schedule": {"name": "warmup_step", "warmup_epochs": 5, "milestones": [160, 180]}}
lt = {"name": "synthetic", "num_classes": 10, "image_size": 32, "samples_per_class": 5000,
      "imbalance_ratio": 100, "test_per_class": 1000, "num_workers": 0}
assert sum(longtail_counts(5000, 10, 100)) == 12406  # CIFAR-10-LT, imbalance 100
configs = {
    "cifar10lt_200": {**common, "run_id": "cifar10lt_200", "epochs": 200, "data": lt},
    "ddp_smoke": {**common, "run_id": "ddp_smoke", "epochs": 2, "distributed": {"processes": 2},
                  "data": {**lt, "samples_per_class": 500, "test_per_class": 100}},
}
failed = False
for name, raw in configs.items():
    try:
        cfg = from_dict(raw)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        failed = True
        continue
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    print(json.dumps({"config": name, "path": str(out / name / "config.json"), "valid": True}))
sys.exit(2 if failed else 0)
PY
if [ "$DRY_RUN" = 1 ]; then
    echo '{"check": "dry_run", "configs": "valid", "out": "'"$OUT"'"}'
    exit 0
fi

# ------------------------------------------------------------------------------ a GPU?
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>"$OUT/cuda.err")
if [ -z "$GPUS" ] || [ "$GPUS" = 0 ]; then
    echo "gpu_check: no CUDA device: torch.cuda.is_available() is false here (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}); run it on a GPU machine" >&2
    cat "$OUT/cuda.err" >&2 2>/dev/null
    exit 3
fi
"$PYTHON" -c 'import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({"check": "device", "gpus": torch.cuda.device_count(), "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": list(torch.cuda.get_device_capability(0)), "torch": torch.__version__, "cuda": torch.version.cuda}))'

declare -A STATUS
stage() {  # stage NAME LIMIT_S COMMAND...: run with a time limit, output in OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local status=passed
    if [ $rc = 124 ] || [ $rc = 137 ]; then status="timed out after ${limit}s"; elif [ $rc != 0 ]; then status="failed (exit $rc)"; fi
    STATUS[$name]=$status
    echo "{\"check\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - t0)), \"log\": \"$OUT/$name.log\"}"
    [ "$status" = passed ] || tail -n 15 "$OUT/$name.log" >&2
}

# 1. gpu-marked tests
# (tests/engine and tests/execution hold every gpu-marked test; the other folders need none). cuBLAS
# reads its workspace setting once per process: set it before any test touches CUDA, so the
# deterministic twins get deterministic matmuls whatever ran before them.
stage pytest_gpu 180 env CUBLAS_WORKSPACE_CONFIG=:4096:8 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu \
    tests/engine tests/execution

# 2. the engine bench on CUDA
stage bench 120 "$PYTHON" -m engine bench --device cuda --model resnet32 --batch-size 128 --steps 50 \
    --precision auto,fp16,fp32 --doctor
"$PYTHON" - "$OUT/bench.log" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
try:
    out = json.loads(text[text.index("{"):])
except ValueError:
    sys.exit(0)
res = out.get("results", {})
print(json.dumps({"check": "bench_figures",
                  "train_img_s": {k: v.get("train_images_per_s", v.get("error")) for k, v in res.items()},
                  "target_train_img_s": 40000,
                  "overhead_ratio": {k: v.get("overhead_ratio") for k, v in res.items()},
                  "doctor_treatment_ratio": out.get("doctor", {}).get("treatment_ratio"),
                  "target_treatment_ratio": 1.3}))
PY

# 3. two ranks through torchrun (the manager starts exactly this for a run given 2 GPUs)
if [ "$GPUS" -ge 2 ]; then
    stage ddp_smoke 150 env CUDA_VISIBLE_DEVICES=0,1 "$PYTHON" -m torch.distributed.run --standalone \
        --nproc-per-node 2 -m engine "$OUT/ddp_smoke"
    "$PYTHON" - "$OUT/ddp_smoke/events.jsonl" <<'PY' || STATUS[ddp_smoke]="failed (no completed run_finished)"
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
end = events[-1]
print(json.dumps({"check": "ddp_smoke_result", "status": end.get("status"), "epochs": sum(e["type"] == "epoch" for e in events)}))
sys.exit(0 if end.get("type") == "run_finished" and end.get("status") == "completed" else 1)
PY
else
    STATUS[ddp_smoke]="skipped: 1 GPU"
    echo '{"check": "ddp_smoke", "status": "skipped: needs 2 GPUs"}'
fi

# 4. the timed 200-epoch CIFAR-10-LT-shaped run (one GPU)
T0=$(date +%s.%N)
stage cifar10lt_200 330 env CUDA_VISIBLE_DEVICES=0 "$PYTHON" -m engine "$OUT/cifar10lt_200"
T1=$(date +%s.%N)
"$PYTHON" - "$OUT/cifar10lt_200/events.jsonl" "$T0" "$T1" <<'PY'
import json, sys
path, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
try:
    events = [json.loads(line) for line in open(path) if line.strip()]
except OSError:
    events = []
epochs = [e for e in events if e.get("type") == "epoch"]
end = events[-1] if events else {}
train_images = 12406 * len(epochs)
epoch_s = sum(e["seconds"] for e in epochs)
first_step = next((e["t"] for e in events if e.get("type") == "step"), None)
print(json.dumps({
    "check": "cifar10lt_200_figures",
    "status": end.get("status"),
    "epochs": len(epochs),
    "wall_s": round(t1 - t0, 1),
    "target_wall_s": 120,
    "epochs_s": round(epoch_s, 1),
    "img_s": round(train_images / epoch_s, 1) if epoch_s else None,  # train images / (train + eval time)
    "target_train_img_s": 40000,
    "startup_s": round(first_step - events[0]["t"], 1) if first_step and events else None,
    "best_acc1": end.get("summary", {}).get("best_acc1"),
}))
PY

# ------------------------------------------------------------------------------ summary
FAILED=0
SUMMARY=""
for name in pytest_gpu bench ddp_smoke cifar10lt_200; do
    status=${STATUS[$name]:-not run}
    SUMMARY="$SUMMARY\"$name\": \"$status\", "
    case "$status" in passed|skipped*) ;; *) FAILED=1 ;; esac
done
echo "{\"check\": \"summary\", ${SUMMARY}\"seconds\": $SECONDS, \"out\": \"$OUT\"}"
exit $FAILED
