"""The teacher's own tuning on the fixed protocol (`loo_time`, seeded ties,
selection on the teachers' half of the validation users).

Four settings, seed 0, the axes that moved plain SASRec most in its tuning
(its architecture is the teacher's history tower): learning rate
{1e-3, 3e-3} x dropout {0.2, 0.5}. The setting with the best
`valid_selection/ndcg@10` becomes the default in configs/common.py; the
`teacher_notext` and `teacher_textonly` controls use the same setting (same
architecture and budget).

  python -m rec_jax.sweep run experiments/tune_teacher.py --root=workdir/tune_teacher
  python -m rec_jax.sweep report workdir/tune_teacher --split valid_selection

Each run trains into the shared teacher cache (keyed by the teacher's config),
so the chosen one is reused by the student tuning and the main job of seed 0.
About 6-10 minutes per run on the 2-core CPU.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
SEEDS = 1  # tuning reads seed 0's validation; main_seeds confirms over 3 seeds
FIXED = {"models": "teacher", "teacher.cache_dir": "workdir/teacher_cache"}


def get_grid(arg=None):
    if sweep.is_tiny(arg):
        return sweep.product({"teacher.optim.lr": [1e-3, 3e-3]}, sweep.seeds(SEEDS))
    return sweep.product({"teacher.optim.lr": [1e-3, 3e-3], "teacher.dropout": [0.2, 0.5]},
                         sweep.seeds(SEEDS))
