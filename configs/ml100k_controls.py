"""Controls: what the language model buys, on the fixed protocol.

    python -m rec_jax.main --config=configs/ml100k_controls.py --workdir=workdir/controls
    python -m rec_jax.main --config=configs/ml100k_controls.py --workdir=workdir/controls_cold \\
        --config.data.split=cold_items

Next to the full teacher (BERT text + IDs + history) and the main job's
students, the same teacher without text (`teacher_notext`: IDs and history,
same architecture, budget and selection) and without IDs
(`teacher_textonly`), a plain SASRec as a teacher that knows no language, and
KD from each of them into MF and SASRec (`<student>_kd@<source>`), so a KD
gain can be told apart from "a stronger teacher of any kind". The report
shows all, tail and strict (and, on `cold_items`, cold) segments. About an
hour on a 2-core CPU; `:tiny` shrinks everything for tests.
"""

from configs import common

SOURCES = ("teacher", "teacher_notext", "teacher_textonly", "sasrec")


def get_config(arg: str | None = None):
    config = common.base_config()
    students = []
    for student in ("mf", "sasrec"):
        students += [student] + [f"{student}_kd" if s == "teacher" else f"{student}_kd@{s}"
                                 for s in SOURCES]
    # sasrec runs before the students that distil from it (a source writes its
    # artifacts when it finishes).
    config.models = ",".join(["ease", "teacher", "teacher_notext", "teacher_textonly", "sasrec"]
                             + [s for s in students if s != "sasrec"])
    common.tuned_loo_time(config)  # (what experiments/tune_students.py chose)
    if common.is_tiny(arg):
        common.shrink(config)
    return config
