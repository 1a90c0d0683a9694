"""Knowledge enhancement: item input = ID embedding + W·(teacher item vector).

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

FUSION_MODES = ("none", "add", "gated")


class ItemFusion(nn.Module):
    """Fuses ID embeddings with projected teacher item vectors.

    Attributes:
      dim: the student's embedding size.
      mode: "add" or "gated".
      inductive: text path alone for items unseen in training.
      shared_dim: width of the teacher's text projection that starts the text
        path (0: none; the path is LayerNorm + W).
    """

    dim: int
    mode: str = "add"
    inductive: bool = True
    shared_dim: int = 0

    @nn.compact
    def __call__(self, id_emb: jnp.ndarray, item_ids: jnp.ndarray | None, side: dict):
        """Fused vectors of items.

        Args:
          id_emb: [..., dim] ID embeddings of the items.
          item_ids: [...] their ids (None: id_emb is the whole table, in order).
          side: holds "fusion_text" [I, d_t] and "item_seen" [I] bool.
        """
        if self.mode not in ("add", "gated"):
            raise errors.ConfigError(f"config.fusion.mode={self.mode!r}: use one of {FUSION_MODES}")
        text = side["fusion_text"] if item_ids is None else side["fusion_text"][item_ids]
        text = text.astype(jnp.float32)
        if self.shared_dim:
            text = nn.Dense(self.shared_dim, name="shared_proj")(
                nn.LayerNorm(name="shared_norm")(text))
        else:
            text = nn.LayerNorm(name="text_norm")(text)
        projected = nn.Dense(self.dim, name="text_proj")(text)
        if self.mode == "add":
            fused = id_emb + projected
        else:
            gate = jax.nn.sigmoid(nn.Dense(self.dim, name="gate")(
                jnp.concatenate([id_emb, projected], axis=-1)))
            fused = gate * id_emb + (1.0 - gate) * projected
        if self.inductive:
            seen = side["item_seen"] if item_ids is None else side["item_seen"][item_ids]
            fused = jnp.where(seen[..., None], fused, projected)
        return fused

