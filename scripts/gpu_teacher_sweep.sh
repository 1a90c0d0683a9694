#!/usr/bin/env bash
# Teacher architecture sweep on a GPU box (no TensorFlow there): each variant
# trains the teacher alone on ml-100k loo_time and prints valid/test NDCG@10.
# Expects a gitignored .carry/ folder made on a machine with TF:
#   .carry/whl/            ml_collections (+ tensorboardX) wheels
#   .carry/data100k/       arrays.npz of the prepared ml-100k (data/100k_<digest>/)
#   .carry/minilm_fp16/    the MiniLM directory (weights stored fp16 to fit the transfer)
# Selection is on validation NDCG@10 only; test is printed alongside for the record.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(--config=configs/ml100k_teacher.py --config.progress=off
        --config.data.prepared=.carry/data100k --config.teacher.bert_path=.carry/minilm_fp16)
run() {  # name, models, extra overrides...
  local name=$1 models=$2; shift 2
  python3 -m rec_jax.main "${common[@]}" --workdir=/tmp/sweep/$name --config.models=$models "$@" \
    > /tmp/sweep_$name.log 2>&1 || echo "$name FAILED: $(tail -n 3 /tmp/sweep_$name.log)"
}
mkdir -p /tmp/sweep
# Text vectors are computed once (cached in .carry/data100k/text_cache) before the parallel runs.
run base teacher --config.teacher.train.epochs=1
run sasrec sasrec &
run v1_nouser teacher --config.teacher.user_ids=False --config.teacher.loss_weights.ctr=0.1 &
run v2_ffn4_nowd teacher --config.teacher.loss_weights.ctr=0.1 --config.teacher.optim.weight_decay=0.0 --config.teacher.ffn_mult=4 &
wait
run v0_default teacher &
run v3_nouser_ffn4_nowd teacher --config.teacher.user_ids=False --config.teacher.loss_weights.ctr=0.1 --config.teacher.optim.weight_decay=0.0 --config.teacher.ffn_mult=4 &
run v4_v3_3layers teacher --config.teacher.user_ids=False --config.teacher.loss_weights.ctr=0.1 --config.teacher.optim.weight_decay=0.0 --config.teacher.ffn_mult=4 --config.teacher.num_layers=3 &
wait
python3 - <<'PY'
import glob, json, os
rows = []
for path in sorted(glob.glob("/tmp/sweep/*/results.json")):
    name = path.split("/")[3]
    for model, r in json.load(open(path)).items():
        rows.append((name, model, r["valid"]["ndcg@10"], r["test"]["ndcg@10"], r["test"]["recall@10"],
                     r["info"].get("train_seconds", 0), r["info"].get("best_step")))
print("| run | model | valid NDCG@10 | test NDCG@10 | test Recall@10 | train s | best step |")
print("|---|---|---|---|---|---|---|")
for row in rows:
    print("| %s | %s | %.4f | %.4f | %.4f | %.0f | %s |" % row)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "teacher_sweep.json"), "w"))
PY
