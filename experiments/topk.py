"""Top-K ranking distillation: list length K x how the K positions are weighted.

Weightings (DESIGN.md §5): position exp(-r/λ), teacher confidence,
student-teacher consistency, and their hybrid.

Full grid (K ∈ {5, 10, 20, 50} x 4 weightings x 3 seeds = 48 runs):

  python -m rec_jax.experiments run experiments/topk.py --root=/tmp/rec_jax/topk
  python -m rec_jax.experiments report /tmp/rec_jax/topk

Tiny (K ∈ {5, 20} x {position, hybrid}, 1 seed = 4 runs on the tiny config):

  python -m rec_jax.experiments run experiments/topk.py --arg=tiny --root=/tmp/rec_jax/topk_tiny
  python -m rec_jax.experiments report /tmp/rec_jax/topk_tiny
"""

from rec_jax import experiments as ex

BASE_CONFIG = "configs/ml100k_distill.py"


def get_grid(arg=None):
    tiny = ex.is_tiny(arg)
    return ex.product(
        {
            "distill.topk": [5, 20] if tiny else [5, 10, 20, 50],
            "distill.rank_weighting": (
                ["position", "hybrid"]
                if tiny
                else ["position", "confidence", "consistency", "hybrid"]
            ),
        },
        ex.seeds(1 if tiny else 3),
    )
