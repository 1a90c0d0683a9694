"""Item and user text: templates, tokenisation, and cached encoder outputs.

Items read like "Toy Story (1995). Genres: Animation, Children's, Comedy." and
users like "A 24 year old man, occupation: technician." Both go through the
teacher's (BERT) tokenizer, padded and truncated to fixed lengths.

Running BERT over the catalogue is the expensive part on a CPU (~30 s for
ml-100k's items), and a frozen bottom of the encoder gives the same output in
every run, so its outputs are cached on disk next to the prepared data, keyed
by the checkpoint, the texts, the lengths and the layer.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from rec_jax.data import raw
from rec_jax.data.dataset import Dataset

TEMPLATE_VERSION = 1


def item_texts(dataset: Dataset) -> list[str]:
    """One sentence per item: title, year when known, genres."""
    texts = []
    for title, year, genres in zip(dataset.item_title, dataset.item_year, dataset.item_genres):
        names = [g for g, on in zip(raw.GENRES, genres) if on and g != "unknown"]
        head = f"{title} ({year})" if year > 0 else str(title)
        texts.append(f"{head}. Genres: {', '.join(names)}." if names else f"{head}.")
    return texts


def user_texts(dataset: Dataset) -> list[str]:
    """One sentence per user from age, gender and occupation."""
    gender_word = {"M": "man", "F": "woman"}
    texts = []
    for age, gender, occupation in zip(dataset.user_age, dataset.user_gender,
                                       dataset.user_occupation):
        who = gender_word.get(str(gender), "person")
        job = str(occupation).replace("/", " or ")
        age_text = f"{int(age)} year old" if age > 1 else "young"
        texts.append(f"A {age_text} {who}, occupation: {job}.")
    return texts


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Pads/truncates to max_length: input_ids, attention_mask, token_type_ids [n, L] int32."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="np")
    return {k: np.asarray(enc[k], np.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids")}


def cache_key(bert_path: str, texts: list[str], max_length: int, layer: int,
              pooled: bool) -> str:
    h = hashlib.sha1()
    weights = os.path.join(bert_path, "model.safetensors")
    stat = os.stat(weights)
    h.update(f"{os.path.abspath(bert_path)}:{stat.st_size}:{TEMPLATE_VERSION}:{max_length}:"
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
    import jax

    from rec_jax.models import bert
    path = str(bert_path or bert.default_bert_path())
    key = cache_key(path, texts, max_length, layer, pooled)
    file = os.path.join(cache_dir, f"text_{key}.npz")
    if os.path.exists(file):
        with np.load(file) as f:
            return dict(f)
    model, variables, tokenizer = bert.load_pretrained(path)
    tokens = tokenize(tokenizer, texts, max_length)

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
    np.savez(file + ".tmp.npz", **result)
    os.replace(file + ".tmp.npz", file)
    return result


def text_side(dataset: Dataset, bert_path: str | None, item_len: int, user_len: int,
              first_layer: int | None, num_layers: int, cache_dir: str) -> dict:
    """Side tables carrying item and user text in the form a teacher needs.

    Args:
      first_layer: the first trainable BERT layer (None: the whole encoder is
        frozen and only pooled outputs are needed).

    Returns:
      frozen encoder: {"item_text": [I, H], "user_text": [U, H]} pooled vectors;
      top:K: {"item_hidden": [I, L, H], "item_tokens": {...}, "user_hidden", "user_tokens"}
        with the frozen bottom layers' output;
      none: {"item_tokens": {...}, "user_tokens": {...}} token ids and masks.
    """
    out = {}
    for kind, texts, length in (("item", item_texts(dataset), item_len),
                                ("user", user_texts(dataset), user_len)):
        if first_layer is None:
            enc = encode_cached(texts, bert_path, length, num_layers, cache_dir, pooled=True)
            out[f"{kind}_text"] = enc["vectors"]
        elif first_layer == 0:
            from rec_jax.models import bert
            tokenizer = bert.load_tokenizer(bert_path)
            out[f"{kind}_tokens"] = tokenize(tokenizer, texts, length)
        else:
            enc = encode_cached(texts, bert_path, length, first_layer, cache_dir, pooled=False)
            out[f"{kind}_hidden"] = enc["hidden"]
            out[f"{kind}_tokens"] = {"attention_mask": enc["attention_mask"]}
    return out
