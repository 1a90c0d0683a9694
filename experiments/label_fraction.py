"""Cold start with few labels: the fraction of training interactions kept.

Runs on the cold-items split (configs/ml100k_coldstart.py), where a seeded 10%
of items never appear in training; the teacher's text knowledge should matter
most when labels are scarce. Each run trains its own teacher on the same
fraction of labels (a teacher that saw all labels would hand them to the
student). The 1.0 runs are the cold-start table; together the runs give
NDCG@10 against the label fraction with mean ± std over 3 seeds.

Full grid (train_fraction ∈ {0.1, 0.25, 0.5, 1.0} x 3 seeds = 12 runs):

  python -m rec_jax.sweep run experiments/label_fraction.py --root=/tmp/rec_jax/label_fraction
  python -m rec_jax.sweep report /tmp/rec_jax/label_fraction --metric ndcg@10 cold/ndcg@10

Tiny (train_fraction ∈ {0.25, 1.0} x 2 seeds = 4 runs on the tiny config):

  python -m rec_jax.sweep run experiments/label_fraction.py --arg=tiny --root=/tmp/rec_jax/label_fraction_tiny
  python -m rec_jax.sweep report /tmp/rec_jax/label_fraction_tiny
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_coldstart.py"
# The grid sweeps the fraction itself (one run per fraction and seed), so the
# coldstart job's own internal sweep is switched off.
FIXED = {"label_fractions": ""}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.product(
        {"data.train_fraction": [0.25, 1.0] if tiny else [0.1, 0.25, 0.5, 1.0]},
        sweep.seeds(2 if tiny else 3),
    )
