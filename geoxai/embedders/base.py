"""What every embedder offers, so retrieval, conditioning and plugins never depend on one model.

An embedder maps images in [0, 1] to L2-normalised descriptors and owns its preprocessing, so
callers never need to know a model's input size or normalisation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Embedder(nn.Module):
    """Base class of descriptor models: ``embed`` images in [0, 1] to unit vectors [B, dim].

    Subclasses set ``name`` (their registry name), ``dim`` and ``image_size``, implement ``embed``
    and ``spec``; ``identity`` then works for free.
    """

    name: str = ""
    dim: int
    image_size: int

    def __init__(self) -> None:  # a subclass without options gets an empty signature, not Module's *args
        super().__init__()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors [B, dim], L2-normalised, of images [B, 3, H, W] in [0, 1] (no grad, eval mode)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The dict ``geoxai.embedders.from_spec`` rebuilds this embedder from (no device)."""
        raise NotImplementedError

    @property
    def random_weights(self) -> bool:
        """True for an untrained (randomly initialised) model: an untrained network baseline, never a result.

        Commands refuse such an embedder unless it is asked for by name (``--weights random``) and
        then say so in their output and result files.
        """
        return False

    @property
    def device(self) -> torch.device:
        """Where the parameters live (CPU for a model without any)."""
        for tensor in self.state_dict().values():
            return tensor.device
        return torch.device("cpu")

    def identity(self) -> str:
        """A stable hash of the spec (minus the weights' location) and the actual tensors.

        Hashing the tensors rather than a file path means moved or renamed weights keep their
        cache entries while any change of the numbers (another checkpoint, a random init) does not.
        """
        spec = {k: v for k, v in self.spec().items() if k not in ("weights", "device")}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
