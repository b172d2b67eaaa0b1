"""The aggregation layers of CosPlace that torch lacks: L2 normalisation and generalised-mean pooling.

Parameter names matter: GeM keeps its exponent in ``p`` so that released checkpoints, which store it
as ``aggregation.1.p``, load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class L2Norm(nn.Module):
    """Scale each vector along ``dim`` to unit Euclidean length."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)


class GeM(nn.Module):
    """Generalised-mean pooling over H x W with a learnable exponent: p=1 is average, p->inf is max."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clamp keeps pow() defined for the zeros a ReLU produces
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"
