"""Equal tuning budgets on the fixed protocol: every plain student and its
distilled twin get 8 validation runs on axes of their own (seed 0, the main
job's split, selection on the students' half of the validation users).

* MF:        loss {bpr, softmax} x lr {1e-3, 3e-3} x l2_embed {0, 1e-4}
* SASRec:    lr {1e-3, 3e-3} x dropout {0.2, 0.5} x embed_dim {64, 128}
* MF KD:     distill temperature {1, 2, 4, 8} x α_soft {0.5, 1.0}
* SASRec KD: distill temperature {1, 2, 4, 8} x α_soft {0.5, 1.0}

Two phases, because a KD twin is built on its plain student's tuned settings
(the same `config.model.<student>` section serves both): first the plain rows,
then, once their winners are the defaults in configs/common.py, the KD rows
with the tuned teacher (experiments/tune_teacher.py). The KD twin therefore
also inherits the plain model's 8 runs; the comparison is "tuned student"
against "tuned student + tuned distillation", never against an untuned one.
Pick each row's setting by `valid_selection/ndcg@10` in the report; test is
read once, after the choice, by the main job over three seeds
(experiments/main_seeds.py).

  python -m rec_jax.sweep run experiments/tune_students.py --root=workdir/tune --only models=mf_
  python -m rec_jax.sweep run experiments/tune_students.py --root=workdir/tune --only models=sasrec_
  python -m rec_jax.sweep run experiments/tune_students.py --root=workdir/tune --only models=teacher+
  python -m rec_jax.sweep report workdir/tune --split valid_selection

About a minute per MF run and 2-5 minutes per SASRec run on the 2-core CPU;
the teacher is trained once into the shared cache.
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_distill.py"
SEEDS = 1  # tuning reads seed 0's validation; main_seeds confirms over 3 seeds
FIXED = {"baselines": "", "teacher.cache_dir": "workdir/teacher_cache"}

KD_AXES = {"distill.temperature": [1.0, 2.0, 4.0, 8.0], "distill.weights.soft": [0.5, 1.0]}


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    mf = sweep.product({"models": ["mf"]},
                       {"model.mf.loss": ["bpr", "softmax"], "model.mf.optim.lr": [1e-3, 3e-3],
                        "model.mf.l2_embed": [0.0, 1e-4]})
    sasrec = sweep.product({"models": ["sasrec"]},
                           {"model.sasrec.optim.lr": [1e-3, 3e-3],
                            "model.sasrec.dropout": [0.2, 0.5],
                            "model.sasrec.embed_dim": [64, 128]})
    mf_kd = sweep.product({"models": ["teacher,mf_kd"]}, KD_AXES)
    sasrec_kd = sweep.product({"models": ["teacher,sasrec_kd"]}, KD_AXES)
    points = mf + sasrec + mf_kd + sasrec_kd
    if tiny:
        points = [mf[0], mf[1], mf_kd[0], mf_kd[1]]
    return sweep.product(points, sweep.seeds(SEEDS))
