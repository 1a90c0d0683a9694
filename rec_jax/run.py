"""The job: data -> split -> each model (train, select on valid, test once) -> report.

``run(config, workdir, stage)`` is what ``rec_jax.main`` calls. Every model of
a run lives in ``<workdir>/<model>/``; a model whose ``results.json`` exists
is finished and is reused, one with a checkpoint resumes, so rerunning the
same command after any interruption completes the job.

Stages: ``teacher`` runs the teacher models, ``student`` the rest (reusing
the teacher's outputs in the workdir), ``eval`` re-evaluates finished models
from their checkpoints, ``all`` runs everything in config order.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import platform
import subprocess
import time

import flax
import jax
import numpy as np

from rec_jax import console, errors, recipes
from rec_jax.data import dataset as dataset_lib
from rec_jax.data import features, interactions, splits
from rec_jax.data import kg as kg_lib
from rec_jax.data import raw
from rec_jax.data import text as text_lib
from rec_jax.eval import agreement as agreement_lib
from rec_jax.eval import ann
from rec_jax.eval import report
from rec_jax.eval.evaluator import Evaluator, ctr_metrics
from rec_jax.eval.sharded import ShardedEvaluator
from rec_jax.models import bert as bert_lib
from rec_jax.models import content_knn
from rec_jax.models import ease as ease_lib
from rec_jax.models.students import Popularity
from rec_jax.recipes import artifacts as artifacts_lib
from rec_jax.recipes import kd as kd_lib
from rec_jax.recipes import text_tables
from rec_jax.recipes.teacher import first_trainable_layer
from rec_jax.spec import ModelName
from rec_jax.train import parallel, trainer

STAGES = ("all", "teacher", "student", "eval")


def machine_description() -> str:
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "none"
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
            f"{len(devices)} x {devices[0].platform}:{kind}, {jax.process_count()} process(es)")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write_json(path: str, obj) -> None:
    if jax.process_index() != 0:
        return
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(path + ".tmp", path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Data and side tables.
# ---------------------------------------------------------------------------


def prepare_data(config, workdir: str) -> interactions.SplitData:
    """Loads the dataset, splits it and writes the split CSVs."""
    d = config.data
    dataset = dataset_lib.load(d.variant, d.data_dir, d.source_dir or None, d.prepared or None)
    if d.extra_interactions:
        dataset = dataset_lib.append_interactions(dataset, d.extra_interactions)
    console.say(dataset.describe())
    window = splits.window_bounds(d.window_edges, d.window) if d.split == "window" else None
    split = splits.make_split(dataset, d.split, config.seed, d.cold_fraction,
                              train_fraction=d.train_fraction, tie_order=d.tie_order,
                              window=window)
    if jax.process_index() == 0:
        splits.write_csv(dataset, split, os.path.join(workdir, "split"))
    data = interactions.build(dataset, split, d.head_share)
    console.say(f"split {d.split} (seed {config.seed}): train {len(split.train):,}, "
                f"valid {len(split.valid):,}, test {len(split.test):,}, "
                f"cold items {len(split.cold_items):,}")
    return data


def needs_text(name: str, config) -> bool:
    """Whether a model reads the teacher's text tables."""
    name = ModelName.parse(name)
    return ((name.is_teacher and not name.notext)
            or (name.kd and config.distill.teacher_mode == "online")
            or needs_pooled_text(name.name, config))


def needs_pooled_text(name: str, config) -> bool:
    """Whether a model reads the frozen BERT's pooled item vectors (side["item_text"])."""
    name = ModelName.parse(name)
    return ((name.fusion and config.fusion.source in ("text", "text+kg"))
            or name.name == "knn_text")


def needs_kg(name: str, config) -> bool:
    """Whether a model reads the item graph (rec_jax.data.kg)."""
    name = ModelName.parse(name)
    return ((name.is_teacher and config.teacher.use_kg)
            or (name.kd and config.distill.teacher_mode == "online" and config.teacher.use_kg)
            or (name.fusion and config.fusion.source in ("kg", "text+kg"))
            or name.name == "knn_kg")


def needs_teacher(name: str, config) -> bool:
    """Whether a model reads the trained teacher (its artifacts, or its params)."""
    name = ModelName.parse(name)
    return (name.kd or name.transfer
            or (name.fusion and (config.fusion.source == "teacher"
                                 or config.transfer.share != "none")))


def check_teacher_ready(config, workdir: str, selected) -> None:
    """Refuses, before any work, students whose teacher this run neither trains nor finds.

    Otherwise a `--stage=student` run in a fresh workdir would train every
    plain model first and only then fail on the first student that distils.
    """
    waiting: dict[str, list[str]] = {}
    for n in selected:
        if needs_teacher(n, config):
            waiting.setdefault(ModelName.parse(n).source, []).append(n)
    for source, students in waiting.items():
        if source in selected:
            continue
        path = os.path.join(model_folder(source, config, workdir), "artifacts.npz")
        if not os.path.exists(path):
            what = "teacher" if source == "teacher" else source
            stage = "teacher" if ModelName.parse(source).is_teacher else "student"
            raise errors.MissingInputError(
                f"{', '.join(students)} need the trained {what}, but its artifacts are "
                f"missing: {path}. Run the {stage} stage first (--stage={stage}, or "
                "--stage=all) in the same workdir.")


def build_side(config, data, names) -> dict:
    """Feature tables for every model of the run (text and KG only if someone reads them)."""
    side = features.side_features(data.dataset, data.dataset.item[data.split.train])
    if any(needs_text(n, config) for n in names):
        cfg = config.teacher
        d = config.data
        folder = d.prepared or dataset_lib.prepared_dir(d.data_dir, d.variant, d.source_dir or None)
        cache = os.path.join(folder, "text_cache")
        t = time.time()
        num_layers = recipes.teacher.bert_settings(cfg).num_layers
        first_layer = first_trainable_layer(cfg)
        side.update(text_tables.text_side(data.dataset, cfg.bert_path or None,
                                          cfg.item_text_len, cfg.user_text_len, first_layer,
                                          num_layers, cache))
        if first_layer is not None and any(needs_pooled_text(n, config) for n in names):
            # Fusion over BERT text and content-KNN read the frozen encoder's
            # pooled vectors, whatever the teacher fine-tunes.
            side.update(text_tables.text_side(data.dataset, cfg.bert_path or None,
                                              cfg.item_text_len, cfg.user_text_len, None,
                                              num_layers, cache))
        console.say(f"text tables ready ({time.time() - t:.1f} s, cached in {cache})")
    if any(needs_kg(n, config) for n in names):
        graph = load_kg(config, data)
        side.update(item_kg_entity=graph.item_entity, item_kg_relation=graph.item_relation)
    return side


def load_kg(config, data) -> kg_lib.ItemGraph:
    """The item graph of config.data.kg_* (cached beside the prepared data, keyed by
    the KG files' digest and the settings, so a folder copied to a machine without
    the raw files still has it)."""
    d = config.data
    folder = d.prepared or dataset_lib.prepared_dir(d.data_dir, d.variant, d.source_dir or None)
    settings = f"min{d.kg_min_items}_max{d.kg_max_entities}"
    if d.prepared and not d.kg_dir:
        found = sorted(glob.glob(os.path.join(os.path.expanduser(folder), f"kg_*_{settings}.npz")))
        if not found:
            raise errors.MissingInputError(
                f"config.data.prepared={d.prepared!r} holds no item graph (kg_*_{settings}.npz):"
                " run once with these settings where the raw files are, then copy the folder")
        graph = kg_lib.ItemGraph.load(found[0])
    else:
        kg_dir = (os.path.expanduser(d.kg_dir) if d.kg_dir
                  else kg_lib.default_dir(d.variant, d.source_dir or None))
        kg_lib.find_files(kg_dir)  # (a clear error before hashing a wrong folder)
        movies = os.path.expanduser(d.kg_link_movies) if d.kg_link_movies else ""
        key = raw.source_digest(kg_dir) + (f"_{hashlib.sha1(movies.encode()).hexdigest()[:8]}"
                                           if movies else "")
        cache = os.path.join(folder, f"kg_{key}_{settings}.npz")
        ds = data.dataset
        graph = kg_lib.load(ds.item_ids, kg_dir, cache, d.kg_min_items, d.kg_max_entities,
                            movies, ds.item_title, ds.item_year)
    console.say(graph.describe())
    train = data.split.train
    lift = kg_lib.alignment(graph, data.dataset.user[train], data.dataset.item[train])
    console.say(f"knowledge graph alignment: an item and its nearest KG neighbour are "
                f"co-rated {lift:.2f}x as often as a random pair")
    if not lift >= 1.2:
        console.say("WARNING: the item graph says nothing about which items users rate "
                    "together: its link file probably uses other item ids (RecBole's "
                    "ml-100k.link is keyed by MovieLens-1M movie ids; give that release's "
                    "movies.dat as config.data.kg_link_movies to match them by title)")
    return graph


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def serving_timing(config, fn, params, query, side) -> dict:
    """{"score_ms_per_user": ms} of fn at batch 1, or {} with config.eval.timings off
    (tiny runs: the compilation costs more than their numbers say)."""
    if not config.eval.timings:
        return {}
    return {"score_ms_per_user": serving_ms(fn, params, query, side)}


def serving_ms(fn, params, query, side, repeats: int = 30) -> float:
    """Median wall time (ms) of fn(params, query, side) after compilation."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(params, query, side))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(jitted(params, query, side))
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def bert_user_text_ms(config, dataset, repeats: int = 20) -> float:
    """Time for BERT to encode one profile sentence: a new user's text at serving."""
    cfg = config.teacher
    model, variables, tokenizer = bert_lib.load_pretrained(cfg.bert_path or None)
    tokens = text_lib.tokenize(tokenizer, text_lib.user_texts(dataset)[:1], cfg.user_text_len)

    def encode(variables, tokens, side):
        del side
        out = model.apply(variables, tokens["input_ids"], tokens["attention_mask"],
                          tokens["token_type_ids"])
        return bert_lib.mean_pool(out["last_hidden_state"], tokens["attention_mask"])
    return serving_ms(encode, variables, tokens, {}, repeats)


# ---------------------------------------------------------------------------
# Evaluation of one model.
# ---------------------------------------------------------------------------


def make_evaluator(data, part: str, config, spec=None, layout=None, num_recs: int = 20,
                   users=None):
    """The full-ranking evaluator of one part: dense, or on the row-sharded
    table in mesh mode for models with a user/item tower (MF, SASRec), or on
    an ANN index (config.eval.retrieval="ivf...", rec_jax.eval.ann; it takes
    precedence over mesh mode). Models without towers rank exactly."""
    retrieval = ann.Retrieval.parse(config.eval.retrieval)
    towers = spec is not None and spec.item_table_fn is not None
    if not retrieval.exact:
        if towers:
            return ann.AnnEvaluator(data, part, retrieval, spec.user_vectors_fn,
                                    spec.item_table_fn, config.eval.ks, config.eval.batch_users,
                                    num_recs, users)
        if part == "test":  # once per model, not once per validation evaluator
            who = f"[{spec.name}] " if spec is not None else ""
            console.say(f"{who}config.eval.retrieval={config.eval.retrieval!r}: a model without "
                        "user/item towers has nothing to index; ranking exactly")
    if layout is not None and layout.mesh is not None and towers:
        return ShardedEvaluator(data, part, layout.mesh, spec.user_vectors_fn,
                                spec.item_table_fn, config.eval.ks, config.eval.batch_users,
                                num_recs, users)
    return Evaluator(data, part, config.eval.ks, config.eval.batch_users, num_recs, users)


SELECTIONS = ("all", "halves")


def selection_users(config, data, name: ModelName):
    """The validation users a model is selected (early-stopped) on.

    config.eval.selection="halves": teachers on one seeded half of the users,
    everything else on the other. A KD student copies the teacher's top-K, and
    the teacher was picked on those same validation users, so sharing them
    flatters the student's validation score; disjoint halves remove that.
    "all" (default): every validation user. Reported validation metrics are
    always on every user.
    """
    mode = config.eval.selection
    if mode not in SELECTIONS:
        raise errors.ConfigError(f"config.eval.selection={mode!r}: use one of {SELECTIONS}")
    if mode == "all":
        return None
    order = np.random.default_rng([config.seed, 0x5E1]).permutation(data.num_users)
    half = order[: data.num_users // 2] if name.is_teacher else order[data.num_users // 2:]
    return np.sort(half).astype(np.int32)


def evaluate_model(name: str, score_fn, make_query, params, side, data, config, folder: str,
                   ctr_logit_fn=None, spec=None, layout=None, selection=None) -> dict:
    """Valid and test metrics (+ recs/truth CSVs) for the given (best) params.

    With a mesh `layout` and a spec with towers, ranking runs on the
    row-sharded item table (rec_jax.eval.sharded.ShardedEvaluator).
    `selection`: the validation users the model was selected on (None: all);
    their metrics go to result["valid_selection"], the number a tuning grid
    compares (`python -m rec_jax.sweep report --split valid_selection`).
    """
    result = {}
    for part in ("valid", "test"):
        ev = make_evaluator(data, part, config, spec, layout, config.eval.num_recs)
        metrics, recs = ev.evaluate(score_fn, params, side, make_query)
        if jax.process_index() == 0 and recs is not None:
            ev.write_recs(recs, folder)
        if ctr_logit_fn is not None:
            metrics.update(ctr_metrics(ctr_logit_fn, make_query, params, side, data, part,
                                       config.data.ctr_threshold))
        result[part] = metrics
    if selection is None:
        result["valid_selection"] = dict(result["valid"])
    else:
        ev = make_evaluator(data, "valid", config, spec, layout, users=selection)
        result["valid_selection"], _ = ev.evaluate(score_fn, params, side, make_query,
                                                   keep_recs=False)
    test = result["test"]
    console.say(f"[{name}] test NDCG@10 {test['ndcg@10']:.4f}  "
                f"Recall@10 {test['recall@10']:.4f}  "
                f"(valid NDCG@10 {result['valid']['ndcg@10']:.4f})")
    return result


def _fit_ease(config, data, side, folder: str) -> dict:
    """EASE, the reference row: one closed-form fit per λ of config.model.ease.l2_grid,
    λ picked on validation (config.model.ease.select_metric), test read once.

    Like MF it scores from the training rows only (validation items are not
    fed back in at test time).
    """
    cfg = config.model.ease
    t0 = time.time()
    train = data.train.dense(np.arange(data.num_users)).astype(np.float32)
    side = dict(side, train_matrix=train)
    selection = selection_users(config, data, ModelName.parse("ease"))
    valid_eval = make_evaluator(data, "valid", config, users=selection)
    curve, best = {}, None
    for l2 in (float(x) for x in str(cfg.l2_grid).split(",") if x.strip()):
        params = {"B": ease_lib.ease_weights(train, l2)}
        metrics, _ = valid_eval.evaluate(ease_lib.EASE.score_all, params, side,
                                         recipes.user_query, keep_recs=False)
        curve[f"{l2:g}"] = metrics[cfg.select_metric]
        console.say(f"[ease] lambda {l2:g}: valid {cfg.select_metric} "
                    f"{metrics[cfg.select_metric]:.4f}")
        if best is None or metrics[cfg.select_metric] > best[0]:
            best = (metrics[cfg.select_metric], l2, params)
    if best is None:
        raise errors.ConfigError("config.model.ease.l2_grid is empty")
    _, l2, params = best
    fit_seconds = time.time() - t0
    result = evaluate_model("ease", ease_lib.EASE.score_all, recipes.user_query, params, side,
                            data, config, folder, selection=selection)
    result["info"] = {"num_params": int(params["B"].size), "train_seconds": fit_seconds,
                      "l2": l2, f"valid_{cfg.select_metric}_by_l2": curve,
                      **serving_timing(config, ease_lib.EASE.score_all, params,
                                       {"user": np.zeros(1, np.int32)}, side)}
    return result


def _fit_content_knn(name, config, data, side, folder: str) -> dict:
    """A content-KNN baseline (rec_jax.models.content_knn): nothing to fit or select;
    the item similarity comes from frozen BERT text (knn_text) or KG entities (knn_kg)."""
    t0 = time.time()
    if name == "knn_text":
        content = content_knn.text_vectors(side["item_text"])
    else:
        entity = side["item_kg_entity"]
        content = content_knn.kg_vectors(entity, int(entity.max()) + 1)
    params = {"S": content_knn.similarity(content)}
    side = dict(side, train_matrix=data.train.dense(np.arange(data.num_users)).astype(np.float32))
    result = evaluate_model(name, content_knn.ContentKNN.score_all, recipes.user_query, params,
                            side, data, config, folder,
                            selection=selection_users(config, data, ModelName.parse(name)))
    result["info"] = {"num_params": 0, "train_seconds": time.time() - t0,
                      **serving_timing(config, content_knn.ContentKNN.score_all, params,
                                       {"user": np.zeros(1, np.int32)}, side)}
    return result


# ---------------------------------------------------------------------------
# The teacher's extras and its bundle for students.
# ---------------------------------------------------------------------------


def _finish_teacher(name, spec, cfg, params, side, data, config, folder, result):
    """Teacher extras: artifacts, params and test logits for the students, and
    the honest serving cost.

    Serving a user means encoding their profile text with BERT (item vectors
    can be precomputed offline), then the history encoder and one matmul; the
    BERT part is timed separately and added.
    """
    info = result["info"]
    if spec.module.use_text:
        if cfg.freeze != "none":
            # Frozen BERT layers are not trained (num_params counts what is)
            # but are part of the model that serves: new users' and items'
            # text goes through them. Counted apart, so "MF has x% of the
            # teacher's parameters" compares trained with trained.
            _, bert_params, _ = bert_lib.load_pretrained(cfg.bert_path or None,
                                                         with_tokenizer=False)
            trained = recipes.num_params(params.get("text", {}))
            info["num_params_frozen"] = recipes.num_params(bert_params) - trained
        if config.eval.timings:
            info["score_ms_bert_user_text"] = bert_user_text_ms(config, data.dataset)
            info["score_ms_per_user"] += info["score_ms_bert_user_text"]
    if jax.process_index() != 0:
        return
    t = time.time()
    arrays = artifacts_lib.compute(spec.module, params, side, data, spec.make_query,
                                   cfg.artifact_topk)
    artifacts_lib.save(os.path.join(folder, "artifacts.npz"), arrays, config, name)
    write_params(folder, params)
    users = Evaluator(data, "test").users
    logits = agreement_lib.teacher_test_logits(spec.score_fn, params, side, spec.make_query, users)
    np.savez(os.path.join(folder, "test_logits.npz"), users=users, logits=logits)
    info["artifact_seconds"] = time.time() - t


def write_params(folder: str, params) -> None:
    """<folder>/params.msgpack: the best params (teachers: for KD; all: for warm starts)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(folder, "params.msgpack")
    with open(path + ".tmp", "wb") as f:
        f.write(flax.serialization.msgpack_serialize(jax.device_get(params)))
    os.replace(path + ".tmp", path)


def model_folder(name: str, config, workdir: str) -> str:
    """Where a model's outputs live: <workdir>/<name>, except a shared teacher.

    With config.teacher.cache_dir set, the teacher (and its _textonly /
    _notext controls) lives in <cache_dir>/<fingerprint>/<name> and is trained
    once for every run with the same teacher config, data and split (grids
    over student settings). Training is deterministic, so reusing it equals
    retraining it.
    """
    if config.teacher.cache_dir and ModelName.parse(name).is_teacher:
        root = os.path.join(os.path.expanduser(config.teacher.cache_dir),
                            artifacts_lib.fingerprint(config))
        return os.path.join(root, name)
    return os.path.join(workdir, name)


FINETUNE_FROM = ("", "frozen")


def frozen_config(config):
    """The config of the frozen-encoder teacher a fine-tuned one starts from: the same
    teacher with teacher.freeze="encoder" and no finetune_from."""
    import copy
    frozen = copy.deepcopy(config)
    with frozen.unlocked():
        frozen.teacher.freeze = "encoder"
        frozen.teacher.finetune_from = ""
    return frozen


def frozen_teacher_params(config, workdir: str, name: str) -> str:
    """params.msgpack of the frozen-encoder twin of teacher `name` (config.teacher.
    finetune_from="frozen": train the heads over cached BERT outputs first, then
    fine-tune the top layers from there, which a CPU can afford).

    The twin lives in the teacher cache (config.teacher.cache_dir) under its own
    fingerprint; it must have finished.
    """
    cfg = config.teacher
    if cfg.finetune_from not in FINETUNE_FROM:
        raise errors.ConfigError(f"config.teacher.finetune_from={cfg.finetune_from!r}: use "
                                 f"one of {FINETUNE_FROM}")
    if cfg.freeze == "encoder":
        raise errors.ConfigError("config.teacher.finetune_from='frozen' fine-tunes BERT layers: "
                                 "set config.teacher.freeze to top:K or none")
    if not cfg.cache_dir:
        raise errors.ConfigError("config.teacher.finetune_from='frozen' finds the frozen-encoder "
                                 "teacher in the teacher cache: set config.teacher.cache_dir "
                                 "(e.g. workdir/teacher_cache) for both runs")
    path = os.path.join(model_folder(name, frozen_config(config), workdir), "params.msgpack")
    if not os.path.exists(path):
        raise errors.MissingInputError(
            f"config.teacher.finetune_from='frozen': the frozen-encoder teacher is not trained "
            f"({path} is missing). Train it first: the same command with "
            "--config.teacher.freeze=encoder --config.teacher.finetune_from=''")
    return path


def teacher_arrays(config, workdir: str, source: str = "teacher") -> dict:
    """A KD source's artifacts (for KD, transfer and fusion, whatever the KD mode)."""
    return artifacts_lib.load(
        os.path.join(model_folder(source, config, workdir), "artifacts.npz"), config, source)


def teacher_params(config, workdir: str, source: str = "teacher") -> dict:
    """A trained teacher's params (online KD, shared text projection)."""
    if not ModelName.parse(source).is_teacher:
        raise errors.ConfigError(f"{source!r} can be distilled from its artifacts only "
                                 "(config.distill.teacher_mode='cached', no transfer.share)")
    folder = model_folder(source, config, workdir)
    path = os.path.join(folder, "params.msgpack")
    if not os.path.exists(path):
        raise errors.MissingInputError(
            f"teacher params not found: {path}. Run the teacher stage first "
            "(--stage=teacher, or --stage=all) in the same workdir.")
    # The fingerprint check guards the params too (same teacher, same split).
    artifacts_lib.load(os.path.join(folder, "artifacts.npz"), config, source)
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def teacher_bundle(config, data, workdir: str, source: str = "teacher",
                   side: dict | None = None) -> kd_lib.TeacherBundle:
    """A KD source as students reach it: artifacts (cached) or params (online)."""
    cfg = config.teacher
    mode = config.distill.teacher_mode
    history_len = recipes.teacher_history_len(cfg, data)
    if mode == "cached":
        arrays = teacher_arrays(config, workdir, source)
        return kd_lib.TeacherBundle(mode, int(arrays["item_vec"].shape[1]), history_len,
                                    float(arrays["temperature"]), artifacts=arrays)
    params = teacher_params(config, workdir, source)
    module = recipes.teacher_module(cfg, data, source, dtype=jax.numpy.dtype(config.dtype),
                                    side=side)
    return kd_lib.TeacherBundle(mode, cfg.dim, history_len, cfg.temperature, module=module,
                                params=params)


# ---------------------------------------------------------------------------
# One model.
# ---------------------------------------------------------------------------


def run_model(name: str, config, data, side, workdir: str, bundle_fn,
              is_source: bool = False) -> dict:
    """Trains (or reuses) one model and returns its results entry.

    bundle_fn(source) -> the TeacherBundle of a KD source; is_source: a
    student that others distil from (`@sasrec`) writes artifacts too.
    """
    folder = model_folder(name, config, workdir)
    os.makedirs(folder, exist_ok=True)
    results_path = os.path.join(folder, "results.json")
    if os.path.exists(results_path):
        console.say(f"[{name}] finished earlier; reusing {results_path}")
        return _read_json(results_path)
    one_user = np.zeros(1, np.int32)
    t0 = time.time()
    if name == "pop":
        model = Popularity(data.item_popularity)
        result = evaluate_model(name, model.score_all, recipes.user_query, {}, side, data,
                                config, folder)
        result["info"] = {"num_params": 0, "train_seconds": 0.0,
                          **serving_timing(config, model.score_all, {}, {"user": one_user},
                                           side)}
        _write_json(results_path, result)
        return result
    if name == "ease":
        result = _fit_ease(config, data, side, folder)
        _write_json(results_path, result)
        return result
    if name in ("knn_text", "knn_kg"):
        result = _fit_content_knn(name, config, data, side, folder)
        _write_json(results_path, result)
        return result

    parsed = ModelName.parse(name)
    source = parsed.source
    teacher = recipes.TeacherAccess(arrays=lambda: teacher_arrays(config, workdir, source),
                                    params=lambda: teacher_params(config, workdir, source),
                                    bundle=lambda: bundle_fn(source))
    spec, side = recipes.build(parsed, config, data, side, teacher)
    cfg = recipes.model_config(config, parsed)
    if cfg.train.init_from:
        spec = recipes.warm_start(spec, os.path.expanduser(cfg.train.init_from),
                                  student_only=parsed.kd)
    if parsed.is_teacher and cfg.finetune_from:
        spec = recipes.warm_start(spec, frozen_teacher_params(config, workdir, name),
                                  student_only=False, keep_missing=("text",),
                                  key="config.teacher.finetune_from")
    # Mesh mode covers the students (their item tables shard by rows); the
    # teacher, whose item vectors come out of BERT, trains with pmap.
    layout = parallel.make_layout(config, name, data.num_items, can_mesh=not parsed.is_teacher)
    if layout.mesh is not None and spec.item_table_fn is None:
        console.say(f"[{name}] mesh mode: no user/item towers to rank on the sharded table; "
                    "evaluating with the dense evaluator")
    selection = selection_users(config, data, parsed)
    valid_eval = make_evaluator(data, "valid", config, spec, layout, users=selection)
    seed = config.seed
    if parsed.is_teacher and cfg.seed >= 0:
        seed = cfg.seed
    fitted = trainer.fit(spec, cfg, side, folder, valid_eval, seed, config.progress, layout)
    train_seconds = time.time() - t0
    result = evaluate_model(name, spec.score_fn, spec.make_query, fitted.params, side, data,
                            config, folder, spec.ctr_logit_fn, spec, layout, selection)
    if parsed.family in ("teacher", "sasrec"):
        # These two read the user's history at test time, validation item
        # included (MF and DeepFM cannot). The same model with the training
        # history only shows how much of its lead that one item is.
        def train_history(users, part):
            return spec.make_query(users, "valid" if part == "test" else part)
        ev = make_evaluator(data, "test", config, spec, layout)
        result["test_train_history"], _ = ev.evaluate(spec.score_fn, fitted.params, side,
                                                      train_history, keep_recs=False)
    serving_params = fitted.params["student"] if parsed.kd else fitted.params
    result["info"] = {
        "num_params": recipes.num_params(serving_params),
        **serving_timing(config, spec.score_fn, fitted.params,
                         spec.make_query(one_user, "test"), side),
        "train_seconds": train_seconds,
        "best_step": fitted.meta["best_step"],
        "steps_done": fitted.meta.get("steps_done"),
        "stopped_early": fitted.meta["stopped_early"],
    }
    if config.parallel != "pmap":
        result["info"]["parallel"] = layout.name
    if parsed.is_teacher:
        _finish_teacher(name, spec, cfg, fitted.params, side, data, config, folder, result)
    else:
        write_params(folder, serving_params)  # what a warm start (train.init_from) reads
        if is_source and jax.process_index() == 0:
            arrays = artifacts_lib.compute_from_towers(spec, fitted.params, side, data,
                                                       config.teacher.artifact_topk)
            artifacts_lib.save(os.path.join(folder, "artifacts.npz"), arrays, config, name)
        logits_path = os.path.join(model_folder("teacher", config, workdir), "test_logits.npz")
        if os.path.exists(logits_path):
            with np.load(logits_path) as f:
                result["test"].update(agreement_lib.agreement(
                    spec.score_fn, fitted.params, side, spec.make_query, data, f["users"],
                    f["logits"]))
    _write_json(results_path, result)
    return result


# ---------------------------------------------------------------------------
# The job.
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _folder_lock(folder: str):
    """One process (of one run) trains a model folder at a time: two grid runs
    sharing a cached teacher must not train it twice or read it half-written."""
    if jax.process_index() != 0 and jax.process_count() > 1:
        yield  # Hosts of one multi-host run train together; process 0 holds the lock.
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def model_names(config) -> list[str]:
    """The run's models: config.models, else baselines + teacher + students x variants."""
    if config.models.strip():
        names = [m.strip() for m in config.models.split(",") if m.strip()]
        key = f"config.models={config.models!r}"
    else:
        names = [b.strip() for b in config.baselines.split(",") if b.strip()] + ["teacher"]
        for student in (s.strip() for s in config.students.split(",") if s.strip()):
            for variant in (v.strip() for v in config.variants.split(",") if v.strip()):
                names.append(student if variant == "plain" else f"{student}_{variant}")
        key = (f"config.baselines={config.baselines!r}, config.students={config.students!r}, "
               f"config.variants={config.variants!r}")
    for name in names:
        try:
            ModelName.parse(name)
        except ValueError as e:
            raise errors.ConfigError(f"{key}: {e}") from None
    return names


def run(config, workdir: str, stage: str = "all") -> dict:
    """Runs the job described by config in workdir; returns all results."""
    if stage not in STAGES:
        raise errors.ConfigError(f"unknown stage {stage!r}; choose one of {STAGES}")
    parallel.check_config(config)
    names = model_names(config)
    selected = [n for n in names if stage in ("all", "eval")
                or (stage == "teacher") == ModelName.parse(n).is_teacher]
    check_teacher_ready(config, workdir, selected)
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "run.json"), {
        "config": config.to_dict(), "machine": machine_description(), "commit": _git_commit(),
        "jax": jax.__version__, "stage": stage})
    data = prepare_data(config, workdir)
    if stage == "eval":
        # Re-evaluation: drop finished results so each model is evaluated again
        # from its final checkpoint (training itself is skipped: it is done).
        for n in selected:
            path = os.path.join(workdir, n, "results.json")
            if os.path.exists(path):
                os.remove(path)
    side = build_side(config, data, selected)
    bundles = {}

    def bundle_fn(source):  # Loaded once, on the first student that needs it.
        if source not in bundles:
            bundles[source] = teacher_bundle(config, data, workdir, source, side)
        return bundles[source]

    sources = {ModelName.parse(n).source for n in selected if needs_teacher(n, config)}
    results = report.read_results(workdir)
    for name in selected:
        with _folder_lock(model_folder(name, config, workdir)):
            results[name] = run_model(name, config, data, side, workdir, bundle_fn,
                                      is_source=name in sources)
        _write_json(os.path.join(workdir, "results.json"), results)
    header = (f"# {os.path.basename(os.path.abspath(workdir))}\n\n"
              f"Data {data.dataset.name}, split `{config.data.split}`, seed {config.seed}; "
              f"test metrics (full ranking over {data.num_items:,} items); "
              f"machine: {machine_description()}.")
    shown = {k: results[k] for k in names if k in results}
    fractions = [float(f) for f in config.label_fractions.split(",") if f.strip()]
    extra = report.paired_table({n: model_folder(n, config, workdir) for n in shown}, shown)
    if fractions:
        extra += "\n" + _label_fraction_sweep(config, workdir, stage, names, shown, fractions)
    if jax.process_index() == 0:
        report.write_report(workdir, shown, header, extra)
        if all(n in results for n in names):
            open(os.path.join(workdir, "COMPLETE"), "w").close()
    console.say(header + "\n\n" + report.markdown_table(shown) + extra)
    return results


def _label_fraction_sweep(config, workdir, stage, names, results, fractions) -> str:
    """Reruns the models with a fraction of each user's training labels.

    Each fraction is a complete run of its own (teacher included: a teacher
    fine-tuned on all labels would hand the student the labels it lacks) in
    <workdir>/fraction_<f>/; the NDCG@10 of every model against the fraction
    is tabulated and plotted.
    """
    import copy
    by_fraction = {float(config.data.train_fraction): results}
    for f in fractions:
        sub = copy.deepcopy(config)
        with sub.unlocked():
            sub.data.train_fraction = f
            sub.label_fractions = ""
        console.say(f"--- label fraction {f:g} ---")
        by_fraction[f] = run(sub, os.path.join(workdir, f"fraction_{f:g}"), stage)
    if jax.process_index() == 0:
        report.plot_vs_fraction(by_fraction, names, os.path.join(workdir, "plots",
                                                                 "ndcg_vs_label_fraction.png"))
    return report.fraction_table(by_fraction, names)
