"""Equal tuning budgets: every plain student and its distilled twin get the same
number of validation runs (8 settings x 3 seeds each), on the main job's split.

Plain students tune what their own loss needs; `_kd` students tune the
distillation on the base config's student settings (neither side is handed
the other's winner):

* MF:      loss {bpr, softmax} x lr {1e-3, 3e-3} x l2_embed {0, 1e-4}
* MF KD:   distill temperature {1, 2, 4, 8} x α_soft {0.5, 1.0}
* SASRec:  lr {1e-3, 3e-3} x dropout {0.2, 0.5} x embed_dim {64, 128}
* SASRec KD: distill temperature {1, 2, 4, 8} x α_soft {0.5, 1.0}

Pick each row's setting by mean `valid/ndcg@10` over the seeds in the report
(`--split valid`); test is read once, after the choice, by the main job. The
budget is written here so a reader can check it: 8 settings x 3 seeds per
row, 96 runs in all (run a row alone with `--only models=teacher+mf_`).

  python -m rec_jax.sweep run experiments/tune_students.py --root=workdir/tune
  python -m rec_jax.sweep report workdir/tune --split valid

Each MF run takes about a minute on the 2-core CPU, each SASRec run 2-4
minutes; the teacher is trained once into the shared cache.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
FIXED = {"baselines": "", "teacher.cache_dir": "workdir/teacher_cache"}

KD_AXES = {"distill.temperature": [1.0, 2.0, 4.0, 8.0], "distill.weights.soft": [0.5, 1.0]}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    mf = sweep.product({"models": ["teacher,mf"]},
                       {"model.mf.loss": ["bpr", "softmax"], "model.mf.optim.lr": [1e-3, 3e-3],
                        "model.mf.l2_embed": [0.0, 1e-4]})
    mf_kd = sweep.product({"models": ["teacher,mf_kd"]}, KD_AXES)
    sasrec = sweep.product({"models": ["teacher,sasrec"]},
                           {"model.sasrec.optim.lr": [1e-3, 3e-3],
                            "model.sasrec.dropout": [0.2, 0.5],
                            "model.sasrec.embed_dim": [64, 128]})
    sasrec_kd = sweep.product({"models": ["teacher,sasrec_kd"]}, KD_AXES)
    points = mf + mf_kd + sasrec + sasrec_kd
    if tiny:
        points = [mf[0], mf[1], mf_kd[0], mf_kd[1]]
    return sweep.product(points, sweep.seeds(1 if tiny else 3))
