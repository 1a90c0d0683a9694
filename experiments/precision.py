"""bf16 vs fp32: the teacher and two students computed in bfloat16 (fp32 params,
fp32 logits and losses) against float32, on the main job's data and split.

  python -m rec_jax.sweep run experiments/precision.py --root=workdir/precision
  python -m rec_jax.sweep report workdir/precision

bf16 is slower than fp32 on this CPU (XLA:CPU has no fast bf16 matmul path
here), so this grid is about quality; speed belongs to scripts/gpu_check.sh.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
# One teacher per dtype and seed (cached: each seed's split has its own tie order;
# the teacher's init is pinned to seed 0), students over 3 seeds.
FIXED = {"models": "teacher,mf,sasrec", "teacher.cache_dir": "workdir/teacher_cache",
         "teacher.seed": 0}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.product({"dtype": ["float32", "bfloat16"]}, sweep.seeds(2 if tiny else 3))
