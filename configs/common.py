"""Shared config pieces: data, evaluation, and per-model train/optim sections.

Every model section (config.model.<name>) carries its own `train` and `optim`
so that grids can tune one model without touching the others. Training
length is `train.epochs` or `train.steps` (one of them), resolved in
rec_jax.train.trainer.resolve_steps.
"""

from ml_collections import ConfigDict


def train_section(**overrides) -> ConfigDict:
    c = ConfigDict()
    c.batch_size_per_device = 2048  # global batch = this x number of devices
    c.epochs = 300.0
    c.steps = 0
    c.eval_every_epochs = 1.0
    c.patience = 10  # evaluations without a better validation metric
    c.select_metric = "ndcg@10"
    c.log_every_steps = 50
    c.checkpoint_every_steps = 0  # 0: save at every evaluation only
    c.keep_checkpoints = 2
    c.input_engine = "auto"  # tf | numpy | auto (tf when TensorFlow imports)
    c.negatives = "uniform"  # uniform | popularity
    c.popularity_power = 1.0
    c.num_negatives = 1
    c.update(overrides)
    return c


def optim_section(**overrides) -> ConfigDict:
    c = ConfigDict()
    c.name = "adam"  # adam | adamw | adagrad | sgd
    c.lr = 1e-3
    c.schedule = "constant"  # constant | cosine | linear
    c.warmup_steps = 0
    c.weight_decay = 0.0  # decoupled (adamw)
    c.l2 = 0.0  # coupled L2 added to the gradient
    c.grad_clip = 0.0
    c.momentum = 0.0
    c.group_lr = ConfigDict()  # optimizer group -> lr multiplier
    c.update(overrides)
    return c


def mf_section() -> ConfigDict:
    c = ConfigDict()
    c.embed_dim = 64
    c.l2_embed = 0.0
    c.train = train_section()
    c.optim = optim_section()
    return c


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    c.models = "pop,mf"  # trained and evaluated in this order
    c.progress = "auto"  # auto | bar | off
    c.data = ConfigDict()
    c.data.variant = "100k"  # TFDS builder config: 100k | 1m
    c.data.source_dir = ""  # raw MovieLens folder; "" = the default (recbole wheel for 100k)
    c.data.data_dir = "data"  # prepared TFDS files and arrays, reused across runs
    c.data.split = "ratio"  # loo_time | ratio | cold_items
    c.data.cold_fraction = 0.1
    c.data.train_fraction = 1.0
    c.data.head_share = 0.2
    c.eval = ConfigDict()
    c.eval.ks = (10, 20)
    c.eval.batch_users = 256
    c.eval.num_recs = 20
    c.eval.ctr_threshold = 4.0
    c.model = ConfigDict()
    c.model.mf = mf_section()
    return c
