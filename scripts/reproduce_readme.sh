#!/usr/bin/env bash
# Reruns everything the README quotes, in order, into workdir/ (resumable:
# finished runs are skipped, interrupted ones resume). CPU-only; about 5-6 hours
# on a 2-core machine. Then `python -m rec_jax.experiments report workdir/<grid>`
# prints each grid's table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grid() { $PY -m rec_jax.experiments run "experiments/$1.py" --root="workdir/$1"; \
         $PY -m rec_jax.experiments report "workdir/$1" > "workdir/$1/summary.txt"; }
job() { $PY -m rec_jax.main --config="$1" --workdir="$2" --config.progress=off "${@:3}"; }

grid main_seeds        # main job, seeds 0-2: KD gains, teacher vs students
grid label_fraction    # cold start + NDCG vs label fraction, seeds 0-2
grid kd_terms          # each distillation term off in turn
grid temperature       # distillation temperature
grid precision         # bf16 vs fp32
job configs/ml100k_mf.py workdir/ml100k_mf                      # MF vs RecBole's BPR (ratio)
job configs/ml100k_teacher.py workdir/teacher_loo               # teacher vs Pop/MF, loo_time
job configs/ml100k_teacher.py workdir/teacher_ratio --config.data.split=ratio
$PY -m rec_jax.bench --out workdir/bench/bench.json             # speed table
