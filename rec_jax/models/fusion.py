"""Knowledge enhancement: item input = ID embedding + content vector (W·text, KG).

A student's item table is fused from its own ID embeddings and a learned
projection of the teacher's item vectors (side table ``fusion_text``,
[num_items, d_teacher]), so items with few or no training interactions
still carry what the language model knows about them:

* ``add``:    v_i = e_i + W t_i
* ``gated``:  g_i = σ(A [e_i; W t_i] + a),  v_i = g_i ⊙ e_i + (1 - g_i) ⊙ W t_i
* ``inductive`` (either mode): items never seen in training (side table
  ``item_seen`` False) use W t_i alone, since their ID embedding was never
  trained on a positive and would only add noise (or the push-down it got as
  a sampled negative).
* ``content``: the content path reads the teacher's (or BERT's) text vectors,
  the item's knowledge-graph entities (an encoder of the student's own,
  rec_jax.models.kg), or both summed (``config.fusion.source``).
* ``id_dropout``: in training, a random share of items use the content path
  alone, so it is trained to score items by itself (a cold item's only path).
* ``shared_dim`` > 0 (``config.transfer.share``): the text path starts with a
  copy of the teacher's own text projection (LayerNorm + Dense to the teacher
  width, layers ``shared_norm`` / ``shared_proj``, filled in by
  rec_jax.distill.transfer.share_text_proj), then W maps that to the student size.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rec_jax import errors
from rec_jax.models.kg import KGItemEncoder

FUSION_MODES = ("none", "add", "gated")
CONTENTS = ("text", "kg", "text+kg")


class ItemFusion(nn.Module):
    """Fuses ID embeddings with a content path (projected text vectors, KG entities).

    Attributes:
      dim: the student's embedding size.
      mode: "add" or "gated".
      inductive: content path alone for items unseen in training.
      shared_dim: width of the teacher's text projection that starts the text
        path (0: none; the path is LayerNorm + W).
      content: "text" (side["fusion_text"] through LayerNorm + W), "kg" (the
        item's knowledge-graph entities, rec_jax.models.kg), or "text+kg" (their sum).
      kg_sizes: (num_entities, num_relations) of the KG path.
      id_dropout: in training, each item uses the content path alone with this
        probability (its ID embedding dropped), so the content path also learns
        to score items on its own, as it must for never-seen items.
    """

    dim: int
    mode: str = "add"
    inductive: bool = True
    shared_dim: int = 0
    content: str = "text"
    kg_sizes: tuple = (0, 0)
    id_dropout: float = 0.0

    @nn.compact
    def __call__(self, id_emb: jnp.ndarray, item_ids: jnp.ndarray | None, side: dict,
                 deterministic: bool = True):
        """Fused vectors of items and which of them used their ID embedding.

        Args:
          id_emb: [..., dim] ID embeddings of the items.
          item_ids: [...] their ids (None: id_emb is the whole table, in order).
          side: holds "item_seen" [I] bool, and per content "fusion_text"
            [I, d_t] and / or "item_kg_entity", "item_kg_relation" [I, M].
          deterministic: no ID dropout (evaluation).

        Returns:
          (fused [..., dim], uses_id [...] bool or None when every item does).
        """
        if self.mode not in ("add", "gated"):
            raise errors.ConfigError(f"config.fusion.mode={self.mode!r}: use one of {FUSION_MODES}")
        if self.content not in CONTENTS:
            raise errors.ConfigError(f"config.fusion.source content {self.content!r}: use one of "
                                     f"{CONTENTS}")
        take = (lambda table: table) if item_ids is None else (lambda table: table[item_ids])
        projected = None
        if self.content in ("text", "text+kg"):
            text = take(side["fusion_text"]).astype(jnp.float32)
            if self.shared_dim:
                text = nn.Dense(self.shared_dim, name="shared_proj")(
                    nn.LayerNorm(name="shared_norm")(text))
            else:
                text = nn.LayerNorm(name="text_norm")(text)
            projected = nn.Dense(self.dim, name="text_proj")(text)
        if self.content in ("kg", "text+kg"):
            kg_vec = KGItemEncoder(*self.kg_sizes, self.dim, name="kg")(
                take(side["item_kg_entity"]), take(side["item_kg_relation"]))
            projected = kg_vec if projected is None else projected + kg_vec
        if self.mode == "add":
            fused = id_emb + projected
        else:
            gate = jax.nn.sigmoid(nn.Dense(self.dim, name="gate")(
                jnp.concatenate([id_emb, projected], axis=-1)))
            fused = gate * id_emb + (1.0 - gate) * projected
        uses_id = take(side["item_seen"]) if self.inductive else None
        if self.id_dropout > 0.0 and not deterministic:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.id_dropout,
                                        fused.shape[:-1])
            uses_id = keep if uses_id is None else uses_id & keep
        if uses_id is not None:
            fused = jnp.where(uses_id[..., None], fused, projected)
        return fused, uses_id
