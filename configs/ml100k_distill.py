"""The main job: BERT teacher -> MF, SASRec, DeepFM with and without distillation.

    python -m rec_jax.main --config=configs/ml100k_distill.py --workdir=workdir/ml100k_distill

Every model runs on the same split (`config.data.split`, default `loo_time`;
`--config.data.split=ratio` works too) so that the rows of report.md compare.
The teacher is reused from the workdir when it is already trained. About
15-20 minutes on a 2-core CPU; `:tiny` (one epoch per student) runs the
whole pipeline in under two minutes (tests and smoke runs).
"""

from configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.students = "mf,sasrec,deepfm"
    config.variants = "plain,kd"  # teacher, mf, mf_kd, sasrec, sasrec_kd, deepfm, deepfm_kd
    config.data.split = "loo_time"
    common.tuned_loo_time(config)  # (what experiments/tune_students.py chose)
    if common.is_tiny(arg):
        common.shrink(config)
    return config
