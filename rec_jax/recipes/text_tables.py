"""Text side tables: item and user text run through the teacher's BERT.

Running BERT over the catalogue is the expensive part on a CPU (~30 s for
ml-100k's items), and a frozen bottom of the encoder gives the same output in
every run, so its outputs are cached on disk next to the prepared data, keyed
by the checkpoint, the texts (``data.text`` templates), the lengths and the
layer.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np

from rec_jax.data import text as text_lib
from rec_jax.data.dataset import Dataset
from rec_jax.models import bert


def cache_key(bert_path: str, texts: list[str], max_length: int, layer: int,
              pooled: bool) -> str:
    h = hashlib.sha1()
    weights = os.path.join(bert_path, "model.safetensors")
    stat = os.stat(weights)
    h.update(f"{os.path.abspath(bert_path)}:{stat.st_size}:{text_lib.TEMPLATE_VERSION}:"
             f"{max_length}:"
             f"{layer}:{pooled}".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode_cached(texts: list[str], bert_path: str | None, max_length: int, layer: int,
                  cache_dir: str, pooled: bool, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Encoder outputs at `layer` (the input of layer `layer`), cached on disk.

    Args:
      texts: sentences.
      bert_path: Hugging Face BERT directory (None: the bundled MiniLM).
      max_length: token length.
      layer: how many encoder layers to run (num_layers for the final output).
      cache_dir: where the .npz cache lives.
      pooled: return mean-pooled [n, hidden] vectors ("vectors"), else the
        hidden states [n, L, hidden] ("hidden").

    Returns:
      {"vectors" or "hidden": float32 array, "attention_mask": [n, L] int32,
       "input_ids": [n, L], "token_type_ids": [n, L]}.
    """
    path = str(bert_path or bert.default_bert_path())
    key = cache_key(path, texts, max_length, layer, pooled)
    file = os.path.join(cache_dir, f"text_{key}.npz")
    if os.path.exists(file):
        with np.load(file) as f:
            return dict(f)
    model, variables, tokenizer = bert.load_pretrained(path)
    tokens = text_lib.tokenize(tokenizer, texts, max_length)

    @jax.jit
    def run(ids, mask, types):
        hidden = model.apply(variables, ids, types, method=model.embed)
        hidden = model.apply(variables, hidden, mask, 0, layer, method=model.encode)
        return bert.mean_pool(hidden, mask) if pooled else hidden

    outs = []
    n = len(texts)
    for lo in range(0, n, batch_size):
        sl = slice(lo, lo + batch_size)
        ids, mask, types = (tokens[k][sl] for k in ("input_ids", "attention_mask",
                                                   "token_type_ids"))
        pad = batch_size - len(ids)
        if pad:  # One compiled shape for every batch.
            ids, mask, types = (np.pad(a, ((0, pad), (0, 0))) for a in (ids, mask, types))
        outs.append(np.asarray(run(ids, mask, types))[:batch_size - pad])
    result = dict(tokens)
    result["vectors" if pooled else "hidden"] = np.concatenate(outs).astype(np.float32)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{file}.{os.getpid()}.tmp.npz"  # (two runs encoding at once never share one)
    np.savez(tmp, **result)
    os.replace(tmp, file)
    return result


def text_side(dataset: Dataset, bert_path: str | None, item_len: int, user_len: int,
              first_layer: int | None, num_layers: int, cache_dir: str) -> dict:
    """Side tables carrying item and user text in the form a teacher needs.

    Args:
      first_layer: the first trainable BERT layer (None: the whole encoder is
        frozen and only pooled outputs are needed).

    Returns:
      frozen encoder: {"item_text": [I, H], "user_text": [U, H]} pooled vectors;
      top:K: {"item_text_buckets": ..., "user_text_buckets": ...}: the frozen
        bottom layers' output per distinct text, in length buckets (see
        :func:`length_buckets`);
      none: {"item_tokens": {...}, "user_tokens": {...}} token ids and masks.
    """
    out = {}
    for kind, texts, length in (("item", text_lib.item_texts(dataset), item_len),
                                ("user", text_lib.user_texts(dataset), user_len)):
        if first_layer is None:
            enc = encode_cached(texts, bert_path, length, num_layers, cache_dir, pooled=True)
            out[f"{kind}_text"] = enc["vectors"]
        elif first_layer == 0:
            tokenizer = bert.load_tokenizer(bert_path)
            out[f"{kind}_tokens"] = text_lib.tokenize(tokenizer, texts, length)
        else:
            enc = encode_cached(texts, bert_path, length, first_layer, cache_dir, pooled=False)
            out[f"{kind}_text_buckets"] = length_buckets(texts, enc["hidden"],
                                                          enc["attention_mask"])
    return out


BUCKET_LENGTHS = (8, 12, 16, 20, 24, 32, 48, 64, 128, 256, 512)


def length_buckets(texts: list[str], hidden: np.ndarray, mask: np.ndarray) -> dict:
    """Cached hidden states of distinct texts, grouped by their real length.

    A top:K teacher runs its fine-tuned layers over every item and user text in
    every step. Padding each text only up to its bucket's length (most item
    sentences are ~16 tokens of a 32-token window) and running each distinct
    text once (ml-100k's 943 profiles are 526 sentences) halves that work; the
    pooled output is the same (padding is masked out of attention and pooling).

    Returns:
      {"buckets": [{"hidden": [n_b, L_b, H], "attention_mask": [n_b, L_b]}, ...],
       "unsort": [n_unique] int32 (the bucketed rows in distinct-text order),
       "index": [n] int32 (each text's distinct-text row)}.
    """
    index_of: dict[str, int] = {}
    index = np.array([index_of.setdefault(t, len(index_of)) for t in texts], np.int32)
    first = np.unique(index, return_index=True)[1]  # each distinct text's first row
    lengths = mask[first].sum(1)
    window = mask.shape[1]
    bucket_of = np.array([min([b for b in BUCKET_LENGTHS if b >= n] + [window]) for n in lengths])
    buckets, order = [], []
    for size in sorted(set(bucket_of.tolist())):
        rows = np.flatnonzero(bucket_of == size)
        width = min(size, window)
        buckets.append({"hidden": np.ascontiguousarray(hidden[first[rows], :width]),
                        "attention_mask": np.ascontiguousarray(mask[first[rows], :width])})
        order.append(rows)
    unsort = np.argsort(np.concatenate(order)).astype(np.int32)
    return {"buckets": buckets, "unsort": unsort, "index": index}
