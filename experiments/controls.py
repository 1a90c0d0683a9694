"""Controls over seeds: what the language model buys (configs/ml100k_controls.py).

Each run trains, on one split and seed, EASE, the full teacher (BERT text +
IDs + history), the teacher without text (`teacher_notext`) and without IDs
(`teacher_textonly`), plain SASRec, and distils each of them into MF and
SASRec (`<student>_kd@<source>`; `mf_kd` and `sasrec_kd` learn from the full
teacher). Teachers live in the shared cache, so the full teacher of a seed is
the main job's (experiments/main_seeds.py) and is not trained twice.

  python -m rec_jax.sweep run experiments/controls.py --root=workdir/controls --only split=loo_time
  python -m rec_jax.sweep report workdir/controls --metric ndcg@10 tail/ndcg@10 cold/recall@10 \\
      --compare mf_kd:mf_kd@teacher_notext sasrec_kd:sasrec_kd@teacher_notext \\
                mf_kd:mf_kd@sasrec sasrec_kd:sasrec_kd@sasrec mf_kd:mf sasrec_kd:sasrec \\
      --compare_metric ndcg@10 tail/ndcg@10 cold/recall@10 cold_only/recall@10

`loo_time` (warm and tail items) and `cold_items` (never-seen items), seeds
0-2 each; about 1.5 hours per run on the 2-core CPU.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_controls.py"
FIXED = {"teacher.cache_dir": "workdir/teacher_cache"}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    splits = {"data.split": ["loo_time"] if tiny else ["loo_time", "cold_items"]}
    return sweep.product(splits, sweep.seeds(1 if tiny else 3))
