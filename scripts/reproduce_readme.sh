#!/usr/bin/env bash
# Reruns everything the README quotes, in order, into workdir/ (resumable:
# finished runs are skipped, interrupted ones resume). The commands run the
# current protocol; the README's old-protocol tables (item-ID ties) need
# --config.data.tie_order=item_id --config.model.deepfm.label=rating
# --config.baselines= on each job. CPU-only; well over a day on a 2-core machine
# (the controls and the fine-tuning grid are hours each); run grids two at a time. Then `python -m rec_jax.sweep report workdir/<grid>` prints
# each grid's table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grid() { $PY -m rec_jax.sweep run "experiments/$1.py" --root="workdir/$1" "${@:2}" \
           -- --config.progress=off; }
summary() { $PY -m rec_jax.sweep report "workdir/$1" "${@:2}" > "workdir/$1/summary.txt"; }
job() { $PY -m rec_jax.main --config="$1" --workdir="$2" --config.progress=off "${@:3}"; }

$PY scripts/id_neighbour_rule.py > workdir/id_neighbour_rule.md   # the tie-leak check
# Tuning on the selection half of validation (eval.selection=halves): the teacher first (its
# winner is the default), then the plain students (winners in configs/common.py:tuned_loo_time),
# then the KD rows on the tuned students.
grid tune_teacher; summary tune_teacher --split valid_selection
grid tune_students; summary tune_students --split valid_selection
grid main_seeds; summary main_seeds \
  --compare mf_kd:mf sasrec_kd:sasrec deepfm_kd:deepfm mf_kd:sasrec mf_kd:ease teacher:sasrec \
            teacher:mf --compare_metric ndcg@10 tail/ndcg@10   # main job, seeds 0-2: paired tests
grid controls; summary controls --metric ndcg@10 tail/ndcg@10 cold/recall@10 \
  --compare teacher:teacher_notext teacher:teacher_textonly teacher:sasrec \
            mf_kd:mf_kd@teacher_notext sasrec_kd:sasrec_kd@teacher_notext \
            mf_kd:mf_kd@sasrec sasrec_kd:sasrec_kd@sasrec mf_kd:mf sasrec_kd:sasrec \
  --compare_metric ndcg@10 tail/ndcg@10 cold/recall@10 cold_only/recall@10
# The language model's side: before / after fine-tuning, cold items among all items.
grid finetune; summary finetune --metric ndcg@10 tail/ndcg@10 cold/recall@10 cold_only/recall@10
grid cold_fusion; summary cold_fusion --split valid_selection \
  --metric ndcg@10 cold/recall@10 cold_only/recall@10 tail/ndcg@10
# Cold start, fractions 1 and 0.1 of the labels, seeds 0-2: with the whole-profile teacher
# (what user_tower=auto picks on cold_items) and with the causal one (the earlier table).
for tower in profile causal; do
  root=label_fraction_profile; [ "$tower" = causal ] && root=label_fraction
  for only in train_fraction=1_ train_fraction=0.1_; do
    $PY -m rec_jax.sweep run experiments/label_fraction.py --root="workdir/$root" \
        --only "$only" -- --config.progress=off --config.teacher.user_tower="$tower"
  done
  summary "$root" --metric ndcg@10 recall@10 cold/recall@10 cold_only/recall@10 tail/ndcg@10
done
grid kd_terms; summary kd_terms                     # each distillation term off in turn
grid temperature; summary temperature               # distillation temperature
grid precision --only seed=0; summary precision     # bf16 vs fp32
job configs/ml100k_mf.py workdir/ml100k_mf                      # MF vs RecBole's BPR (ratio)
job configs/ml100k_teacher.py workdir/teacher_loo               # teacher vs Pop/MF, loo_time
# (the README's loo_time teacher row is the main job's teacher: same config and split)
job configs/ml100k_teacher.py workdir/teacher_ratio --config.data.split=ratio
for seed in 1 2; do                                              # the ratio teacher, seeds 1-2
  job configs/ml100k_teacher.py "workdir/teacher_ratio_seed$seed" --config.data.split=ratio \
      --config.seed="$seed"
done
# Speed table (idle machine; the encoder row needs a separate torch venv, see the README).
# Each student also runs with what lets its step cost stop growing with the data: sparse
# tables (MF, DeepFM), sampled softmax + sparse tables (SASRec).
$PY -m rec_jax.bench --sparse_tables mf,deepfm \
    --variant sasrec_sampled=sasrec:model.sasrec.sampled_negatives=1024,model.sasrec.optim.sparse_tables=true \
    ${TORCH_PYTHON:+--torch_python "$TORCH_PYTHON"} --out workdir/bench/bench.json
