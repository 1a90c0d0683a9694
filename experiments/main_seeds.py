"""The main job (configs/ml100k_distill.py) over seeds 0, 1, 2: KD gains as mean ± std.

On `loo_time` the split is the same for every seed, so the three runs share one
teacher (trained once, with seed 0, in the shared teacher cache) and the seeds
vary the students: their init, data order and negatives.

  python -m rec_jax.sweep run experiments/main_seeds.py --root=workdir/main_seeds
  python -m rec_jax.sweep report workdir/main_seeds

About 15 minutes per seed on a 2-core CPU (the first run also trains the teacher).
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
# One teacher for all seeds (loo_time does not depend on the seed).
FIXED = {"teacher.cache_dir": "workdir/teacher_cache", "teacher.seed": 0}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.seeds(2 if tiny else 3)
