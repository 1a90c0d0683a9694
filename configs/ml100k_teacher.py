"""The BERT teacher on MovieLens-100K, beside Pop and MF, on the `loo_time` split.

    python -m rec_jax.main --config=configs/ml100k_teacher.py --workdir=workdir/teacher
    python -m rec_jax.main --config=configs/ml100k_teacher.py --workdir=workdir/teacher_ratio \\
        --config.data.split=ratio

The CPU default freezes the whole MiniLM encoder (`teacher.freeze=encoder`):
item and profile texts go through BERT once (about 10 s, then cached in the
data folder) and only the recommendation layers train, so the teacher
fine-tunes and writes its artifacts in a few minutes on 2 cores. `top:K`
fine-tunes the top K BERT layers on cached lower-layer outputs; `none`
fine-tunes everything and belongs on a GPU (configs/ml100k_distill_gpu.py).
`teacher_textonly` is the same teacher without ID embeddings.

The user tower follows the split (`teacher.user_tower=auto`): on `loo_time`
a causal transformer over the latest 50 items, trained on the next item; on
`ratio` and `cold_items` a whole-profile tower over a bag of up to 256 items,
trained to rebuild the bag from a copy with half its items dropped
(Mult-DAE-like), with the text paths damped (`teacher.profile_text_scale`).
Either can be forced with `--config.teacher.user_tower=causal|profile`.
`:tiny` shrinks everything for tests (about a minute).
"""

from configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.models = "pop,mf,teacher,teacher_textonly"
    config.data.split = "loo_time"
    if common.is_tiny(arg):
        common.shrink(config)
    return config
