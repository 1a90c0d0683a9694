"""Top-K ranking distillation: list length K x how the K positions are weighted.

Weightings: position exp(-r/λ), teacher confidence,
student-teacher consistency, and their hybrid.

Full grid (K ∈ {5, 10, 20, 50} x 4 weightings x 3 seeds = 48 runs):

  python -m rec_jax.sweep run experiments/topk.py --root=workdir/topk
  python -m rec_jax.sweep report workdir/topk

Tiny (K ∈ {5, 20} x {position, hybrid}, 1 seed = 4 runs on the tiny config):

  python -m rec_jax.sweep run experiments/topk.py --arg=tiny --root=workdir/topk_tiny
  python -m rec_jax.sweep report workdir/topk_tiny
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
        {
            "distill.topk": [5, 20] if tiny else [5, 10, 20, 50],
            "distill.rank_weighting": (
                ["position", "hybrid"]
                if tiny
                else ["position", "confidence", "consistency", "hybrid"]
            ),
        },
        sweep.seeds(1 if tiny else 3),
    )
