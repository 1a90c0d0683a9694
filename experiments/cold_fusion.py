"""Cold items among warm ones: the fused student's ID dropout and content source, tuned on
`cold_items` validation (seed 0).

A never-seen item reaches the fused student only through its content path
(the teacher's item vector, or frozen BERT text through the student's own
map). Trained with every warm item's ID embedding on, that path only learns
the residual the IDs leave, so a cold item's score sits below warm items with
hundreds of positives (cold Recall@10 among all items ~0). `fusion.id_dropout`
trains a share of items through the content path alone in every step.

Runs: the reference rows once (content-KNN over BERT text, the teacher, MF,
MF-KD), then `mf_kd_transfer_fusion` over id_dropout {0, 0.25, 0.5} x
fusion.source {teacher, text}. Pick by validation: cold Recall@10 among all
items, with warm NDCG@10 within 2% of MF-KD's.

  python -m rec_jax.sweep run experiments/cold_fusion.py --root=workdir/cold_fusion
  python -m rec_jax.sweep report workdir/cold_fusion --split valid_selection \\
      --metric ndcg@10 cold/recall@10 cold_only/recall@10 tail/ndcg@10

The teacher is trained once into the shared cache (about 20 minutes on the
2-core CPU), each fused student about 10 minutes.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_coldstart.py"
SEEDS = 1  # tuning reads seed 0's validation; the cold-start grid confirms over seeds
FIXED = {"label_fractions": "", "teacher.cache_dir": "workdir/teacher_cache"}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    reference = [{"models": "knn_text,teacher,mf,mf_kd"}]
    fused = sweep.product({"models": ["teacher,mf_kd_transfer_fusion"]},
                          {"fusion.id_dropout": [0.0, 0.5] if tiny else [0.0, 0.25, 0.5],
                           "fusion.source": ["teacher"] if tiny else ["teacher", "text"]})
    return sweep.product(reference + fused, sweep.seeds(SEEDS))
