"""The one place that wires a model: a name becomes a ModelSpec.

``mf_kd_transfer_fusion`` is parsed once into a :class:`~rec_jax.spec.ModelName`;
the family's recipe (``students``, ``teacher``) gives its module, examples,
own loss and views; ``kd`` wraps it in the distillation objective;
``distill.transfer`` starts it from the teacher's vectors; fusion feeds it
the teacher's (or BERT's) item vectors as a side table. Modules, losses and
data sources know nothing of each other; only this package joins them.

    spec = recipes.model_spec("mf", config, data, side)            # plain models
    spec, side = recipes.build("mf_kd_fusion", config, data, side, teacher)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax
import jax
import numpy as np

from rec_jax import errors
from rec_jax.data.interactions import SplitData
from rec_jax.distill import transfer
from rec_jax.recipes import kd
from rec_jax.recipes.students import FAMILIES, module_args, user_query
from rec_jax.recipes.teacher import (teacher_history_len, teacher_module, teacher_spec,
                                     teacher_tower_args, teacher_user_tower)
from rec_jax.spec import ModelName, ModelSpec

__all__ = ["TeacherAccess", "build", "warm_start", "model_config", "model_spec", "module_args", "num_params",
           "teacher_history_len", "teacher_module", "teacher_tower_args", "teacher_user_tower",
           "user_query"]


@dataclasses.dataclass
class TeacherAccess:
    """What a student may read of the trained teacher, loaded on first use.

    Attributes:
      arrays: () -> the teacher's artifacts (transfer and fusion read its vectors).
      params: () -> its trained params (a shared text projection reads them).
      bundle: () -> the kd.TeacherBundle a `_kd` student trains against.
    """

    arrays: Callable[[], dict]
    params: Callable[[], Any]
    bundle: Callable[[], kd.TeacherBundle]


def model_config(config, name: str | ModelName):
    """The config section of a model (`mf_kd` -> config.model.mf; teachers: config.teacher)."""
    name = name if isinstance(name, ModelName) else ModelName.parse(name)
    return config.teacher if name.is_teacher else config.model[name.family]


def model_spec(name: str | ModelName, config, data: SplitData, side: dict) -> ModelSpec:
    """The model trained on its own task only (the `_kd` suffix is ignored here).

    A `_fusion` student reads side["fusion_text"] (see :func:`build`) and / or the
    item graph (side["item_kg_entity"], side["item_kg_relation"]).
    """
    name = name if isinstance(name, ModelName) else ModelName.parse(name)
    if name.family == "pop":
        raise ValueError("'pop' has no trained spec; it is scored from popularity counts")
    if name.is_teacher:
        return teacher_spec(name, config, data, side)
    return FAMILIES[name.family](name, config, data, side)


def build(name: str | ModelName, config, data: SplitData, side: dict,
          teacher: TeacherAccess | None = None) -> tuple[ModelSpec, dict]:
    """Any model name as (spec, the side tables it trains and scores with)."""
    name = name if isinstance(name, ModelName) else ModelName.parse(name)
    needs_teacher = name.kd or name.transfer or name.fusion
    if needs_teacher and teacher is None:
        raise ValueError(f"model {name.name!r} needs the trained teacher")
    if name.fusion and config.fusion.source in ("teacher", "text", "text+kg"):
        vectors = (teacher.arrays()["item_vec"] if config.fusion.source == "teacher"
                   else side["item_text"])
        side = dict(side, fusion_text=vectors)
    spec = model_spec(name, config, data, side)
    if name.kd:
        spec, side = kd.kd_spec(spec, teacher.bundle(), config, data, side)
    if name.transfer:
        arrays = teacher.arrays()
        spec = transfer.with_transfer(spec, name.family, config.transfer, arrays["item_vec"],
                                      arrays["user_vec"], config.seed)
    if name.fusion and config.transfer.share != "none":  # (validated by module_args)
        spec = transfer.with_shared_text(
            spec, config.transfer.share, teacher.params(),
            teacher_tower_args(config.teacher, data)["text_scale"])
    return spec, side


def warm_start(spec: ModelSpec, path: str, student_only: bool,
               keep_missing: tuple[str, ...] = (), key: str = "train.init_from") -> ModelSpec:
    """`spec` starting from the params in `path` (a params.msgpack a finished run wrote).

    student_only: the file holds a student's own params and the spec is its
    `_kd` form ({"student": ..., KD heads}); the heads start fresh.
    keep_missing: top-level param groups the file may lack, which keep their
      own init (a frozen-encoder teacher has no "text" tower; the fine-tuned
      one starts that tower from the pretrained BERT).
    key: the config key that named the file (for errors).
    """
    if not os.path.exists(path):
        raise errors.MissingInputError(f"{key}={path!r}: no such file (a finished "
                                       "run writes <workdir>/<model>/params.msgpack)")
    with open(path, "rb") as f:
        loaded = flax.serialization.msgpack_restore(f.read())
    base_init = spec.init

    def init(rng):
        params = base_init(rng)
        target = params["student"] if student_only else params
        want = {jax.tree_util.keystr(k): np.shape(v)
                for k, v in jax.tree_util.tree_leaves_with_path(target)}
        have = {jax.tree_util.keystr(k): np.shape(v)
                for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
        kept = tuple(jax.tree_util.keystr((jax.tree_util.DictKey(g),)) for g in keep_missing)
        for name in sorted(set(want) | set(have)):
            if name not in have and name.startswith(kept):
                continue
            if want.get(name) != have.get(name):
                raise errors.ConfigError(
                    f"{key}={path!r}: param {name} is {have.get(name)} there but "
                    f"{want.get(name)} in {spec.name!r} (another model or size?)")
        new = {g: v for g, v in target.items() if g in keep_missing and g not in loaded}
        new.update(jax.tree.map(lambda a, b: np.asarray(b, np.asarray(a).dtype),
                                {g: target[g] for g in loaded}, loaded))
        return dict(params, student=new) if student_only else new
    return dataclasses.replace(spec, init=init)


def num_params(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))
