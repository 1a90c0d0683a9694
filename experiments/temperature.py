"""Distillation temperature T of the soft-label term (T²·KL at temperature T).

Full grid (T ∈ {1, 2, 4, 8} x 3 seeds = 12 runs):

  python -m rec_jax.sweep run experiments/temperature.py --root=workdir/temperature
  python -m rec_jax.sweep report workdir/temperature

Tiny (T ∈ {1, 4} x 2 seeds = 4 runs on the tiny config):

  python -m rec_jax.sweep run experiments/temperature.py --arg=tiny --root=workdir/temperature_tiny
  python -m rec_jax.sweep report workdir/temperature_tiny
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
# MF students only (each run ~2 minutes on the CPU). One cached teacher per seed,
# shared with every other grid on the main job's data: each seed's split has its
# own order of same-time ratings, so its own teacher (whose init is pinned to seed 0).
FIXED = {"students": "mf", "teacher.cache_dir": "workdir/teacher_cache", "teacher.seed": 0}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.product(
        {"distill.temperature": [1.0, 4.0] if tiny else [1.0, 2.0, 4.0, 8.0]},
        sweep.seeds(2 if tiny else 3),
    )
