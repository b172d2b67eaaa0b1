"""The CosFace (large margin cosine) classification head that CosPlace trains each group with.

Logits are ``s * (cos(x, w_j) - m * [j == y])``: the true class must beat the others by a cosine
margin ``m``, which pulls descriptors of one place together on the unit sphere and pushes places
apart. The head is thrown away after training; only the descriptor network is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosFaceHead(nn.Module):
    """Cosine classifier with an additive margin on the target class (CosFace, CVPR 2018)."""

    def __init__(self, in_features: int, num_classes: int, s: float = 30.0, m: float = 0.4) -> None:
        super().__init__()
        self.in_features, self.num_classes, self.s, self.m = in_features, num_classes, float(s), float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, descriptors: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled cosine logits [B, num_classes]; the margin applies only when labels are given."""
        cosine = F.linear(F.normalize(descriptors, dim=1), F.normalize(self.weight, dim=1))
        if labels is not None:
            cosine = cosine - self.m * F.one_hot(labels, self.num_classes).to(cosine.dtype)
        return self.s * cosine

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}, m={self.m}"
