"""The teacher: a pretrained BERT turned into a multi-task recommender.

Item tower: BERT over the item text (mean-pooled), projected to the model
width, plus an item ID embedding (on by default, so the teacher sees all the
students see plus the text). User tower: the profile text through the same
BERT, plus a user ID embedding, plus one of two history encoders:

* ``causal``: a causal transformer over the latest items in time order,
  trained to predict each next item (next-item splits such as ``loo_time``);
* ``profile``: a set encoder over a bag of the user's items, trained to
  rebuild the bag from a corrupted copy (Mult-DAE-like; for splits that hold
  out random interactions, ``ratio`` and ``cold_items``, where whole-profile
  taste matters more than the latest item).

Heads:

* ranking: score(u, i) = (<u, i> + b_i) / temperature, softmax over items
  (full catalogue, or the positive plus shared sampled negatives);
* CTR: an MLP over [u, i, u ⊙ i] -> logit, label rating >= 4;
* genres: a multi-label classifier on item vectors (19 genres).

Where the BERT runs depends on the freezing strategy:

* ``encoder``: BERT is frozen; its pooled outputs are computed once and
  arrive as side tables ``item_text`` / ``user_text`` (fast on a CPU);
* ``top:K``: the bottom N-K layers are frozen and cached (side tables
  ``item_text_buckets`` / ``user_text_buckets`` hold their outputs per
  distinct text, grouped by length; ``item_hidden`` / ``user_hidden`` padded
  arrays work too, as the exporter feeds them); the top K layers are
  parameters of this module and fine-tune;
* ``none``: the whole BERT (embeddings included) fine-tunes from token ids
  (side tables ``item_tokens`` / ``user_tokens``); the GPU configuration.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rec_jax import errors
from rec_jax.models import bert as bert_lib
from rec_jax.models.kg import KGItemEncoder
from rec_jax.models.layers import ProfileEncoder, SequenceEncoder

USER_TOWERS = ("causal", "profile")


def parse_freeze(freeze: str, num_layers: int) -> int | None:
    """The first trainable BERT layer for a strategy; None = frozen and cached.

    "encoder" -> None, "none" -> 0 (everything trains), "top:K" -> num_layers - K.
    """
    if freeze == "encoder":
        return None
    if freeze == "none":
        return 0
    if freeze.startswith("top:"):
        try:
            k = int(freeze[4:])
        except ValueError:
            k = -1
        if not 1 <= k <= num_layers:
            raise errors.ConfigError(
                f"config.teacher.freeze={freeze!r}: K must be in 1..{num_layers}")
        return num_layers - k
    raise errors.ConfigError(f"config.teacher.freeze={freeze!r}: use 'encoder', 'top:K' or 'none'")


class TextTower(nn.Module):
    """BERT layers [first_layer, N) and mean pooling over real tokens."""

    settings: bert_lib.BertSettings
    first_layer: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: dict, deterministic: bool):
        """[n, H] pooled vectors of token ids (first_layer 0), of cached hidden states
        ({"hidden", "attention_mask"}), or of cached states in length buckets
        ({"buckets", "unsort", "index"}, rec_jax.recipes.text_tables.length_buckets)."""
        model = bert_lib.BertModel(self.settings, dtype=self.dtype, name="bert")
        if "buckets" in inputs:
            pooled = jnp.concatenate([
                bert_lib.mean_pool(model.encode(b["hidden"].astype(self.dtype),
                                                b["attention_mask"], self.first_layer, None,
                                                deterministic=deterministic),
                                   b["attention_mask"])
                for b in inputs["buckets"]])
            return pooled[inputs["unsort"]][inputs["index"]]
        mask = inputs["attention_mask"]
        if self.first_layer == 0:
            hidden = model.embed(inputs["input_ids"], inputs["token_type_ids"],
                                 deterministic=deterministic)
        else:
            hidden = inputs["hidden"].astype(self.dtype)
        hidden = model.encode(hidden, mask, self.first_layer, None, deterministic=deterministic)
        return bert_lib.mean_pool(hidden, mask)


class Teacher(nn.Module):
    """Text + ID two-tower recommender with a history-based user tower and three heads.

    Attributes:
      num_users, num_items, num_genres: sizes.
      dim: model width.
      max_len: history window of the causal tower (its position table).
      num_layers, num_heads, dropout, ffn_mult: the history transformer.
      user_tower: "causal" (next-item) or "profile" (bag of items, one state).
      kg_sizes: (num_entities, num_relations) of a knowledge-graph item view
        (rec_jax.models.kg) added to the item vectors; (0, 0): none.
      kg_scale: a fixed factor on the KG vectors (as text_scale for text).
      id_dropout: share of items made content-only in each training step.
      text_scale: a fixed factor on both text projections' outputs. Below 1
        it starts the text paths small and slows them under Adam by the same
        factor, so that the ID embeddings, not the shared text map, carry the
        collaborative signal (the profile tower needs it; see configs/common.py).
      use_ids: add ID embeddings to the text vectors.
      use_text: use item / user text at all (False: an ID-only teacher).
      user_ids: add a user ID embedding to the user tower (with use_ids).
      temperature: ranking logits are divided by it.
      bert_settings: the BERT architecture (needed unless the text is cached).
      text_first_layer: first trainable BERT layer, or None when cached.
      dtype: compute dtype (params stay float32; logits and losses float32).
    """

    num_users: int
    num_items: int
    num_genres: int
    dim: int = 128
    max_len: int = 50
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    use_ids: bool = True
    use_text: bool = True
    user_ids: bool = True
    temperature: float = 1.0
    bert_settings: bert_lib.BertSettings | None = None
    text_first_layer: int | None = None
    dtype: Any = jnp.float32
    ffn_mult: int = 2
    user_tower: str = "causal"
    text_scale: float = 1.0
    kg_sizes: tuple = (0, 0)
    kg_scale: float = 1.0
    id_dropout: float = 0.0

    @property
    def use_kg(self) -> bool:
        return self.kg_sizes[0] > 0

    def setup(self):
        if not (self.use_ids or self.use_text):
            raise errors.ConfigError("the teacher needs text, IDs or both "
                                     "(config.teacher.use_text, config.teacher.use_ids)")
        if self.use_text:
            self.item_text_proj = nn.Sequential([nn.LayerNorm(), nn.Dense(self.dim)])
            self.user_text_proj = nn.Sequential([nn.LayerNorm(), nn.Dense(self.dim)])
            if self.text_first_layer is not None:
                self.text = TextTower(self.bert_settings, self.text_first_layer, self.dtype)
        if self.use_kg:
            self.kg = KGItemEncoder(self.kg_sizes[0], self.kg_sizes[1], self.dim)
        if self.use_ids:
            init = nn.initializers.normal(0.02)
            self.item_id = nn.Embed(self.num_items, self.dim, embedding_init=init)
            if self.user_ids:
                self.user_id = nn.Embed(self.num_users, self.dim, embedding_init=init)
            self.item_bias = self.param("item_bias", nn.initializers.zeros, (self.num_items,))
        if self.user_tower == "causal":
            self.history = SequenceEncoder(self.dim, self.num_layers, self.num_heads,
                                           self.dropout, self.max_len, self.dtype, self.ffn_mult)
        elif self.user_tower == "profile":
            self.history = ProfileEncoder(self.dim, self.num_layers, self.num_heads, self.dropout,
                                          self.dtype, self.ffn_mult)
            if self.use_ids:
                # Items as evidence of taste (in the bag) and as candidates
                # get separate ID embeddings, as FISM's P and Q, so how an item
                # speaks for a user is not bound to how it is scored.
                self.bag_item_id = nn.Embed(self.num_items, self.dim,
                                            embedding_init=nn.initializers.normal(0.02))
        else:
            raise errors.ConfigError(f"user_tower={self.user_tower!r}: use one of {USER_TOWERS}")
        self.ctr_hidden = nn.Dense(self.dim)
        self.ctr_out = nn.Dense(1)
        self.genre_head = nn.Dense(self.num_genres)

    # -- towers ---------------------------------------------------------------

    def _text_vectors(self, side, kind: str, deterministic: bool):
        """Pooled BERT vectors of all items or all users: [n, hidden]."""
        if self.text_first_layer is None:
            return side[f"{kind}_text"]
        if self.text_first_layer == 0:
            return self.text(side[f"{kind}_tokens"], deterministic)
        if f"{kind}_text_buckets" in side:
            return self.text(side[f"{kind}_text_buckets"], deterministic)
        return self.text({"hidden": side[f"{kind}_hidden"],
                          "attention_mask": side[f"{kind}_tokens"]["attention_mask"]},
                         deterministic)

    def uses_id(self, side, deterministic: bool = True):
        """[num_items] bool: items whose ID embedding (and bias) count, or None (all).

        With content (text or KG), items without training interactions are
        content-only: their ID embedding was never trained on a positive
        (inductive cold start). With `id_dropout`, a random share of items is
        content-only in each training step too, so the content path learns to
        rank items by itself, which is all a never-seen item has.
        """
        if not self.use_ids or not (self.use_text or self.use_kg):
            return None
        uses = side["item_seen"]
        if self.id_dropout > 0.0 and not deterministic:
            uses = uses & jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.id_dropout,
                                               uses.shape)
        return uses

    def item_vectors(self, side, deterministic: bool = True, uses_id=None):
        """[num_items, dim]: projected item text (+ KG vector) (+ item ID embedding).

        uses_id: the mask from :meth:`uses_id` (drawn once per forward pass, so the
        bias sees the same one); None draws it here.
        """
        if uses_id is None:
            uses_id = self.uses_id(side, deterministic)
        v = 0.0
        if self.use_text:
            v = self.text_scale * self.item_text_proj(self._text_vectors(side, "item",
                                                                         deterministic))
        if self.use_kg:
            v = v + self.kg_scale * self.kg(side["item_kg_entity"], side["item_kg_relation"])
        if self.use_ids:
            ids = self.item_id.embedding
            if uses_id is not None:
                ids = jnp.where(uses_id[:, None], ids, 0.0)
            v = v + ids
        return v

    def user_static(self, users, side, deterministic: bool = True):
        """[B, dim]: projected profile text (+ user ID embedding)."""
        s = jnp.zeros((users.shape[0], self.dim))
        if self.use_text:
            s = s + self.text_scale * self.user_text_proj(
                self._text_vectors(side, "user", deterministic))[users]
        if self.use_ids and self.user_ids:
            s = s + self.user_id(users)
        return s

    def user_states(self, query, items, side, deterministic: bool = True):
        """[B, L, dim]: the user at every history position (causal), or [B, 1, dim]
        after the whole bag (profile); position -1 is the user now, in both."""
        table = items
        if self.user_tower == "profile" and self.use_ids:
            table = items + jnp.where(side["item_seen"][:, None], self.bag_item_id.embedding, 0.0)
        states = self.history(table, query["inputs"], deterministic)
        return states + self.user_static(query["user"], side, deterministic)[:, None]

    def bias(self, side, uses_id=None):
        if not self.use_ids:
            return jnp.zeros((self.num_items,))
        if uses_id is None:
            uses_id = self.uses_id(side)
        return self.item_bias if uses_id is None else jnp.where(uses_id, self.item_bias, 0.0)

    # -- heads ----------------------------------------------------------------

    def rank_logits(self, users_vec, items, bias):
        return (users_vec @ items.T + bias) / self.temperature

    def ctr_logit(self, u, v):
        """CTR head on [u, v, u ⊙ v] (any leading shape)."""
        h = jnp.concatenate([u, v, u * v], axis=-1)
        return self.ctr_out(nn.gelu(self.ctr_hidden(h)))[..., 0]

    def genre_logits(self, items):
        return self.genre_head(items)

    # -- entry points ---------------------------------------------------------

    def __call__(self, batch, side, deterministic: bool = True, sampled: jax.Array | None = None):
        """Training outputs for a batch of user sequences.

        Args:
          batch: "user" [B], "inputs" [B, L], "targets" [B, T] (-1 = padding).
            Causal tower: T = L, target t follows input t. Profile tower:
            "inputs" is the visible bag and "targets" the held-out items, all
            predicted from the one bag state.
          side: feature tables (see module docstring).
          sampled: optional [S] shared negative item ids for a sampled softmax.

        Returns:
          "logits": [B, S, num_items] (full; S = L causal, S = 1 profile, the
          one row shared by all T targets) or [B, T, 1 + S] (sampled; column 0
          is the target), "ctr_logit": [B, T], "genre_logits": [num_items, G],
          "user_emb": [B, dim] (last position), "item_emb": [num_items, dim].
        """
        uses_id = self.uses_id(side, deterministic)
        items = self.item_vectors(side, deterministic, uses_id)
        states = self.user_states(batch, items, side, deterministic)
        bias = self.bias(side, uses_id)
        targets = jnp.where(batch["targets"] >= 0, batch["targets"], 0)
        target_vecs = items[targets]
        if sampled is None:
            logits = self.rank_logits(states, items, bias)
        else:
            pos = ((states * target_vecs).sum(-1) + bias[targets]) / self.temperature
            neg = self.rank_logits(states, items[sampled], bias[sampled])
            # A sampled item equal to the target is no negative.
            neg = jnp.where(sampled[None, None] == targets[..., None], -1e9, neg)
            logits = jnp.concatenate([pos[..., None], neg], axis=-1)
        return {
            "logits": logits.astype(jnp.float32),
            "ctr_logit": self.ctr_logit(jnp.broadcast_to(states, target_vecs.shape),
                                        target_vecs).astype(jnp.float32),
            "genre_logits": self.genre_logits(items).astype(jnp.float32),
            "user_emb": states[:, -1],
            "item_emb": items,
        }

    def score_all(self, query, side, deterministic: bool = True):
        """[B, num_items] ranking logits for the queried users."""
        items = self.item_vectors(side, deterministic)
        u = self.user_states(query, items, side, deterministic)[:, -1]
        return self.rank_logits(u, items, self.bias(side)).astype(jnp.float32)

    def outputs_for_users(self, query, side, deterministic: bool = True):
        """Everything distillation reads from the teacher for a set of users.

        Returns:
          "user_vec" [B, dim], "item_vec" [I, dim], "item_bias" [I],
          "logits" [B, I], "genre_prob" [I, G].
        """
        items = self.item_vectors(side, deterministic)
        u = self.user_states(query, items, side, deterministic)[:, -1]
        bias = self.bias(side)
        return {"user_vec": u, "item_vec": items, "item_bias": bias,
                "logits": self.rank_logits(u, items, bias).astype(jnp.float32),
                "genre_prob": jax.nn.sigmoid(self.genre_logits(items)).astype(jnp.float32)}

    def ctr_for_pairs(self, query, item_ids, side, deterministic: bool = True):
        """[B] CTR logits of (user after their history, item) pairs."""
        items = self.item_vectors(side, deterministic)
        u = self.user_states(query, items, side, deterministic)[:, -1]
        return self.ctr_logit(u, items[item_ids]).astype(jnp.float32)


def load_text_tower(params: dict, bert_path: str | None) -> dict:
    """Copies pretrained BERT weights into the text tower's parameters.

    Only the layers the tower owns (and the embeddings when it starts at 0)
    are copied; every one of them must match the checkpoint in name and shape.
    """
    _, pretrained, _ = bert_lib.load_pretrained(bert_path, with_tokenizer=False)
    pretrained = flax.traverse_util.flatten_dict(pretrained["params"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    prefix = ("text", "bert")
    for path, value in list(flat.items()):
        if path[:2] != prefix:
            continue
        name = path[2:]
        if name not in pretrained:
            raise ValueError(f"text tower parameter {'/'.join(name)} has no pretrained weight")
        if pretrained[name].shape != value.shape:
            raise ValueError(f"text tower parameter {'/'.join(name)}: shape {value.shape} != "
                             f"pretrained {pretrained[name].shape}")
        flat[path] = jnp.asarray(pretrained[name], value.dtype)
    return flax.traverse_util.unflatten_dict(flat)
