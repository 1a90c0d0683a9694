"""Student embedding size: what each size buys in quality and costs to serve.

One axis, zipped over the three students (MF, SASRec and DeepFM all get the same
embed_dim in a run). The report adds a quality (ndcg@10) vs serving cost
(score_ms_per_user) plot per model.

Full grid (embed_dim ∈ {8, 16, 32, 64, 128} x 3 seeds = 15 runs):

  python -m rec_jax.sweep run experiments/student_size.py --root=/tmp/rec_jax/student_size
  python -m rec_jax.sweep report /tmp/rec_jax/student_size

Tiny (embed_dim ∈ {8, 32} x 2 seeds = 4 runs on the tiny config):

  python -m rec_jax.sweep run experiments/student_size.py --arg=tiny --root=/tmp/rec_jax/student_size_tiny
  python -m rec_jax.sweep report /tmp/rec_jax/student_size_tiny
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
STUDENTS = ("mf", "sasrec", "deepfm")


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    dims = [8, 32] if tiny else [8, 16, 32, 64, 128]
    return sweep.product(
        sweep.zip_axes({f"model.{s}.embed_dim": dims for s in STUDENTS}),
        sweep.seeds(2 if tiny else 3),
    )
