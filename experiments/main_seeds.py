"""The main job (configs/ml100k_distill.py) over seeds 0, 1, 2: KD gains as mean ± std.

Each seed is a whole replicate: its own order of same-time ratings (so its own
`loo_time` hold-outs), its own teacher (trained with that seed, kept in the
shared teacher cache under the split's fingerprint) and students paired with
it. The report's KD-gain table carries paired tests over users pooled over the
seeds.

  python -m rec_jax.sweep run experiments/main_seeds.py --root=workdir/main_seeds
  python -m rec_jax.sweep report workdir/main_seeds

About 20 minutes per seed on a 2-core CPU (teacher included).
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
# One teacher per seed (the split depends on the seed through its tie order).
FIXED = {"teacher.cache_dir": "workdir/teacher_cache"}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.seeds(2 if tiny else 3)
