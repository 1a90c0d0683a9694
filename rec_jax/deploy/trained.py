"""A finished run's student, read back from its workdir for export.

The run's own config (``<workdir>/run.json``) rebuilds the data, the split,
the side tables and the model exactly as the job built them; the best
validation params come from the model's checkpoint (never retrained: a
missing or unfinished model is a one-line error).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from configs import common

from rec_jax import errors, recipes
from rec_jax import run as run_lib
from rec_jax.deploy.export import Student, TextPath
from rec_jax.models import bert as bert_lib
from rec_jax.recipes.teacher import first_trainable_layer, teacher_module
from rec_jax.spec import ModelName
from rec_jax.train import trainer


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a finished job ran with (its run.json), over today's defaults (keys
    added since the job ran take their default values)."""
    path = os.path.join(workdir, "run.json")
    if not os.path.exists(path):
        raise errors.MissingInputError(f"{path} not found: --workdir must be a workdir of "
                                       "python -m rec_jax.main")
    with open(path) as f:
        saved = json.load(f)["config"]
    config = common.base_config()
    _overlay(config, saved)
    return config


def _overlay(config: ml_collections.ConfigDict, saved: dict) -> None:
    for key, value in saved.items():
        current = config.get(key) if key in config else None
        if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
            _overlay(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            config[key] = tuple(value)
        elif key in config:
            config[key] = value
        else:  # a key this code does not define: kept, in case a section reads it
            config[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def text_path(config, data, workdir: str, parsed: ModelName) -> TextPath:
    """BERT (and the teacher's item text projection) for new items' fusion vectors."""
    cfg = config.teacher
    path = cfg.bert_path or str(bert_lib.default_bert_path())
    model, bert_vars, _ = bert_lib.load_pretrained(path, with_tokenizer=False)
    settings = model.settings
    if settings.hidden_act == "gelu":  # the same function, in ops TF can load
        settings = dataclasses.replace(settings, hidden_act="gelu_exportable")
    model = bert_lib.BertModel(settings)
    num_layers = settings.num_layers
    first = first_trainable_layer(cfg)
    source = config.fusion.source
    if source == "text":
        if first is not None:
            raise errors.ConfigError("fusion.source='text' reads frozen pooled BERT vectors; "
                                     f"this run fine-tunes BERT (teacher.freeze={cfg.freeze!r})")
        first = num_layers
        teacher = None
        variables = {"bert": bert_vars["params"]}
    else:
        teacher = teacher_module(cfg, data, "teacher", settings, dtype=jnp.float32)
        tparams = run_lib.teacher_params(config, workdir, parsed.source)
        if "item_text_proj" not in tparams:
            raise errors.ConfigError(f"teacher {parsed.source!r} has no text path: its "
                                     "students cannot add new items from text")
        # (All of it: the module's setup binds every parameter it declares.)
        variables = {"bert": bert_vars["params"], "teacher": tparams}
        first = num_layers if first is None else first

    def fn(variables, input_ids, attention_mask, token_type_ids):
        bert = {"params": variables["bert"]}
        hidden = model.apply(bert, input_ids, token_type_ids, method=model.embed)
        if first:
            hidden = model.apply(bert, hidden, attention_mask, 0, first, method=model.encode)
        if teacher is None:
            return bert_lib.mean_pool(hidden, attention_mask)
        if first == num_layers:
            inputs = {"item_text": bert_lib.mean_pool(hidden, attention_mask)}
        elif first == 0:
            inputs = {"item_tokens": {"input_ids": input_ids, "attention_mask": attention_mask,
                                      "token_type_ids": token_type_ids}}
        else:
            inputs = {"item_hidden": hidden, "item_tokens": {"attention_mask": attention_mask}}

        def item_text_vectors(m, side):
            return m.text_scale * m.item_text_proj(m._text_vectors(side, "item", True))
        return teacher.apply({"params": variables["teacher"]}, inputs, method=item_text_vectors)

    return TextPath(fn, variables, int(cfg.item_text_len), path, source)


def load(workdir: str, name: str) -> Student:
    """The trained student `name` of the job in `workdir`."""
    config = run_config(workdir)
    parsed = ModelName.parse(name)
    if parsed.is_teacher or parsed.family not in ("mf", "sasrec", "deepfm"):
        raise errors.ConfigError(f"--model={name!r}: export serves students (mf, sasrec, "
                                 "deepfm and their _kd/_transfer/_fusion variants)")
    if parsed.fusion and config.fusion.source in ("kg", "text+kg"):
        # A new item would need its entities in the graph, and the bundle carries
        # no graph: only text-fused students take new items at serving.
        raise errors.ConfigError(f"--model={name!r} fuses knowledge-graph entities "
                                 f"(config.fusion.source={config.fusion.source!r}); export "
                                 "serves text-fused or unfused students")
    names = run_lib.model_names(config)
    if name not in names:
        raise errors.ConfigError(f"--model={name!r} is not a model of the job in {workdir} "
                                 f"(it ran {', '.join(names)})")
    data = run_lib.prepare_data(config, workdir)
    side = run_lib.build_side(config, data, [name])
    source = parsed.source
    teacher = recipes.TeacherAccess(
        arrays=lambda: run_lib.teacher_arrays(config, workdir, source),
        params=lambda: run_lib.teacher_params(config, workdir, source),
        bundle=lambda: run_lib.teacher_bundle(config, data, workdir, source))
    spec, full_side = recipes.build(parsed, config, data, side, teacher)
    if parsed.fusion:  # The student's own tables: the base ones and its fusion input.
        side = dict(side, fusion_text=full_side["fusion_text"])
    folder = run_lib.model_folder(name, config, workdir)
    fitted = trainer.restore_best(spec, recipes.model_config(config, parsed), folder, config.seed)
    params = fitted.params["student"] if parsed.kd else fitted.params
    plain = recipes.model_spec(parsed, config, data, side)
    users = np.arange(data.num_users, dtype=np.int32)
    query = {k: np.asarray(v) for k, v in plain.make_query(users, "test").items()}
    ds = data.dataset
    text = None
    if parsed.fusion:
        text = text_path(config, data, workdir, parsed)
    return Student(
        name=name, family=parsed.family, module=plain.module, params=jax.device_get(params),
        query=query, side=side, exclude=np.asarray(data.known_items("test").dense(users), bool),
        user_ids=ds.user_ids, item_ids=ds.item_ids, item_title=ds.item_title,
        item_year=ds.item_year, item_genres=ds.item_genres, text=text,
        cold_items=np.asarray(data.split.cold_items))
