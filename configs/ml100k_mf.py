"""Popularity and BPR-MF on MovieLens-100K, ratio 8:1:1 split (RecBole's protocol).

    python -m rec_jax.main --config=configs/ml100k_mf.py --workdir=workdir/ml100k_mf

About 30 s on a 2-core CPU. `:tiny` (3 epochs) finishes in well under a
minute and is what the tests run:

    python -m rec_jax.main --config=configs/ml100k_mf.py:tiny --workdir=/tmp/mf_tiny
"""

from configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.models = "pop,mf"
    config.data.split = "ratio"
    if common.is_tiny(arg):
        config.model.mf.train.epochs = 3.0
        config.model.mf.train.log_every_steps = 10
    return config
