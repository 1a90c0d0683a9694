"""bf16 vs fp32: the teacher and two students computed in bfloat16 (fp32 params,
fp32 logits and losses) against float32, on the main job's data and split.

  python -m rec_jax.experiments run experiments/precision.py --root=workdir/precision
  python -m rec_jax.experiments report workdir/precision

bf16 is slower than fp32 on this CPU (XLA:CPU has no fast bf16 matmul path
here), so this grid is about quality; speed belongs to scripts/gpu_check.sh.
"""

from rec_jax import experiments as ex

BASE_CONFIG = "configs/ml100k_distill.py"
# One teacher per dtype (cached), students over 3 seeds.
FIXED = {"models": "teacher,mf,sasrec", "teacher.cache_dir": "workdir/teacher_cache",
         "teacher.seed": 0}


def get_grid(arg=None):
    tiny = ex.is_tiny(arg)
    return ex.product({"dtype": ["float32", "bfloat16"]}, ex.seeds(2 if tiny else 3))
