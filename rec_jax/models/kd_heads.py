"""Distillation-only layers of a student: projectors into the teacher's space
and a genre head. They train with the student (params["kd"]) but never serve."""

from __future__ import annotations

import flax.linen as nn


class KDHeads(nn.Module):
    """Projects student user/item vectors to the teacher's width and predicts genres.

    Attributes:
      teacher_dim: the teacher's vector width.
      num_genres: how many genre labels the teacher's genre head predicts.
    """

    teacher_dim: int
    num_genres: int

    def setup(self):
        self.user_proj = nn.Dense(self.teacher_dim)
        self.item_proj = nn.Dense(self.teacher_dim)
        self.genre = nn.Dense(self.num_genres)

    def __call__(self, user_emb, item_emb):
        """[B, d], [N, d] -> ([B, dt], [N, dt], [N, num_genres] logits)."""
        return self.user_proj(user_emb), self.item_proj(item_emb), self.genre(item_emb)
