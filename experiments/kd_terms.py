"""Which distillation terms matter: all on, each term off in turn, hard only.

The first point overrides nothing: every term keeps the weight the base config
gives it (`distill.weights.*` in configs/ml100k_distill.py). The next four set
one of α_soft, α_rank, α_emb, α_aux to 0; the last keeps only the hard
(label) loss, i.e. the students trained without a teacher.

Full grid (6 points x 3 seeds = 18 runs):

  python -m rec_jax.sweep run experiments/kd_terms.py --root=workdir/kd_terms
  python -m rec_jax.sweep report workdir/kd_terms

Tiny (all on vs hard only, 2 seeds = 4 runs on the tiny config, a few minutes on CPU):

  python -m rec_jax.sweep run experiments/kd_terms.py --arg=tiny --root=workdir/kd_terms_tiny
  python -m rec_jax.sweep report workdir/kd_terms_tiny
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
# MF students only (each run ~2 minutes on the CPU). One cached teacher per seed,
# shared with every other grid on the main job's data: each seed's split has its
# own order of same-time ratings, so its own teacher (whose init is pinned to seed 0).
FIXED = {"students": "mf", "teacher.cache_dir": "workdir/teacher_cache", "teacher.seed": 0}
TERMS = ("soft", "rank", "emb", "aux")


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    all_on = {}
    one_off = [{f"distill.weights.{term}": 0.0} for term in TERMS]
    hard_only = {f"distill.weights.{term}": 0.0 for term in TERMS}
    points = [all_on, hard_only] if tiny else [all_on, *one_off, hard_only]
    return sweep.product(points, sweep.seeds(2 if tiny else 3))
