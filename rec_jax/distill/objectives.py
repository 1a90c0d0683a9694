"""Loss terms as pure functions of arrays (DESIGN §5).

Each returns a scalar mean over the examples that count, so terms can be
weighted and added: ``L = Σ α_i L_i``. Hard losses are the models' own tasks;
distillation terms compare student outputs with teacher outputs that arrive
already under ``stop_gradient``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _masked_mean(values, mask):
    if mask is None:
        return values.mean()
    mask = mask.astype(values.dtype)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


# ---------------------------------------------------------------------------
# Hard (label) losses.
# ---------------------------------------------------------------------------


def bpr_loss(pos_score: jnp.ndarray, neg_score: jnp.ndarray) -> jnp.ndarray:
    """Bayesian personalised ranking: -log σ(s⁺ - s⁻), averaged.

    Args:
      pos_score: [B] scores of observed items.
      neg_score: [B, n] scores of sampled unobserved items.
    """
    return -jax.nn.log_sigmoid(pos_score[:, None] - neg_score).mean()


def softmax_ce_loss(logits: jnp.ndarray, targets: jnp.ndarray,
                    mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cross-entropy of a softmax over all items.

    Args:
      logits: [..., num_items].
      targets: [...] item ids; entries where mask is False are ignored.
      mask: [...] bool, or None for all.
    """
    safe = jnp.where(targets < 0, 0, targets)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    return _masked_mean(losses, mask)


def bce_loss(logits: jnp.ndarray, labels: jnp.ndarray,
             mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Binary cross-entropy with logits; labels may be soft (in [0, 1])."""
    losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                labels.astype(jnp.float32))
    return _masked_mean(losses, mask)
