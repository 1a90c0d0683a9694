"""Periodic refresh on ml-100k: replay its seven months and compare update policies.

    python -m rec_jax.main --config=configs/ml100k_refresh.py --workdir=workdir/refresh

Windows are calendar months: window 0 trains on September-November 1997 and
is scored on December; window w trains on everything before month w and is
scored on it (December to April, five windows). Per window the teacher and
the distilled MF student are `stale` (window 0's, never updated), `refresh`
(fine-tuned from the previous window's teacher and student, at most
`refresh.teacher_epochs` / `refresh.student_epochs` with patience
`refresh.patience`) or `scratch` (retrained from zero). See rec_jax/refresh.py;
the report is <workdir>/refresh.md. Append the service's interactions log as
data with --config.data.extra_interactions=<bundle>/store/interactions.jsonl
and a window edge after it.
"""

from configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.job = "refresh"
    config.baselines = ""
    config.students = "mf"
    config.variants = "kd"  # teacher, mf_kd
    config.data.split = "window"
    config.data.window_edges = ("1997-12-01,1998-01-01,1998-02-01,1998-03-01,1998-04-01,"
                                "1998-05-01")
    if common.is_tiny(arg):
        common.shrink(config)
        config.data.window_edges = "1997-11-01,1997-12-01,1998-01-01"  # small: fast
        config.refresh.teacher_epochs = 1.0
        config.refresh.student_epochs = 1.0
    return config
