"""How much of the BERT teacher to fine-tune: heads only, top 1 or 2 layers, all.

`encoder` trains only the heads over a frozen encoder (whose outputs can be
cached, so it is fast); `top:K` also trains the top K transformer layers and
`none` trains everything. The last three backpropagate through BERT and are
SLOW ON CPU (expect many times the `encoder` time per run): run the full grid
on a GPU/TPU, or only `--only=freeze=encoder` on a laptop.

Full grid (4 strategies x 3 seeds = 12 teacher runs):

  python -m rec_jax.sweep run experiments/freeze.py --root=/tmp/rec_jax/freeze
  python -m rec_jax.sweep report /tmp/rec_jax/freeze

Tiny (encoder and top:1, 1 seed = 2 runs on the tiny teacher config):

  python -m rec_jax.sweep run experiments/freeze.py --arg=tiny --root=/tmp/rec_jax/freeze_tiny
  python -m rec_jax.sweep report /tmp/rec_jax/freeze_tiny
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_teacher.py"


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.product(
        {"teacher.freeze": ["encoder", "top:1"] if tiny else ["encoder", "top:1", "top:2", "none"]},
        sweep.seeds(1 if tiny else 3),
    )
