"""Before / after fine-tuning: the teacher with BERT frozen, and with its top 1 or 2
layers fine-tuned, on `ratio` and `cold_items`, with and without item IDs, and
the KD student of each.

A fine-tuned teacher starts from its frozen twin (`teacher.finetune_from=frozen`:
the heads, ID embeddings and history tower trained over cached BERT outputs
first), then trains the top K layers and everything above them at the
teacher's learning rate (BERT's group at 0.1x) for at most
`FINETUNE_EPOCHS`, early-stopped on the teachers' validation half. Each step
runs the top K layers, forward and backward, over every item text and user
profile (the full-catalogue softmax needs every item vector), so a step costs
seconds on 2 cores: heads first, then a short fine-tune, is what a CPU can
afford (and it is the linear-probe-then-fine-tune recipe).

Runs, per split and seed (all teachers share the cache, so the frozen twin is
trained once and reused):

* `teacher.freeze=encoder`: teacher, teacher_textonly (no IDs), mf_kd, and the
  reference rows EASE, knn_text and MF
* `teacher.freeze=top:1`, `top:2`: teacher, teacher_textonly, mf_kd

  python -m rec_jax.sweep run experiments/finetune.py --root=workdir/finetune
  python -m rec_jax.sweep report workdir/finetune --metric ndcg@10 tail/ndcg@10 cold/recall@10 cold_only/recall@10

Grid order puts every frozen run before the fine-tuned ones. About 10 minutes
per frozen run and 20-40 minutes per fine-tuned one on the 2-core CPU
(hours in all: run one split with `--only split=ratio` at a time).
"""

from rec_jax import sweep

BASE_CONFIG = "configs/ml100k_teacher.py"
FIXED = {"teacher.cache_dir": "workdir/teacher_cache"}
FINETUNE_EPOCHS = 30.0


def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    models = {"models": "teacher,teacher_textonly,mf_kd"}
    # The frozen runs carry the reference rows too (closed-form / cheap): EASE,
    # content-KNN over BERT text (the cold-start bar), plain MF.
    frozen = [{"models": "ease,knn_text,mf,teacher,teacher_textonly,mf_kd",
               "teacher.freeze": "encoder"}]
    # Warm-started from the frozen twin with a short budget: patience counts from
    # the start (min_epochs 0), as in the refresh job's warm starts.
    tuned = [dict(models, **{"teacher.freeze": f"top:{k}", "teacher.finetune_from": "frozen",
                             "teacher.train.epochs": 1.0 if tiny else FINETUNE_EPOCHS,
                             "teacher.train.min_epochs": 0.0})
             for k in ((1,) if tiny else (1, 2))]
    splits = sweep.product({"data.split": ["ratio"] if tiny else ["ratio", "cold_items"]})
    seeds = sweep.seeds(1 if tiny else 3)
    return sweep.product(splits, frozen, seeds) + sweep.product(splits, tuned, seeds)
