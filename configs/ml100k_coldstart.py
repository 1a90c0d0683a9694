"""Cold-start and long tail: transfer and knowledge fusion on the `cold_items` split.

    python -m rec_jax.main --config=configs/ml100k_coldstart.py --workdir=workdir/coldstart

A seeded 10% of the items never appear in training; their interactions are
only in valid/test. The job trains the teacher, then MF without KD, with KD,
with KD + transfer (teacher-PCA init) and with KD + transfer + fusion (item =
ID embedding + W·teacher item vector, text path alone for unseen items), and
reports overall, tail, cold (ranked among all items) and cold-only (ranked
among cold items) metrics. It then repeats the models with 10%, 25% and 50%
of each user's training interactions (`label_fractions`; each in its own
sub-folder) and plots NDCG@10 against the label fraction. Swap the student
family with --config.students=deepfm (or sasrec). Roughly 30-40 minutes on a
2-core CPU; `:tiny` takes a few minutes.
"""

from configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.students = "mf"
    config.variants = "plain,kd,kd_transfer,kd_transfer_fusion"
    config.data.split = "cold_items"
    config.label_fractions = "0.1,0.25,0.5"
    if common.is_tiny(arg):
        common.shrink(config)
        config.label_fractions = "0.25"
    return config
