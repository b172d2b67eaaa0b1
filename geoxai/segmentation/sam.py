"""``sam``: Segment Anything masks that sharpen another segmenter's label maps and split a class into instances.

A semantic model (``hf``) knows *what* is where but blurs boundaries and merges touching objects; SAM's
automatic masks follow boundaries but carry no class. Two recipes combine them:

- ``refine`` (Semantic-Segment-Anything): every SAM mask, largest first, takes the majority label of
  the base map under it, so smaller masks (a sign on a facade) overrule the larger ones around them.
  Pixels no mask covers keep the base label, and no label appears that the base map did not have.
- ``instances`` (window counting): SAM masks that are mostly pixels of the class become instances,
  largest first, each claiming the class pixels no larger instance took (so the panes inside a window
  do not count again, and a facade mask is never a window); an instance that spans separate blobs
  of the class is cut along them. Class pixels no mask claimed join the instance they touch, or form
  their own. Every class pixel ends in exactly one instance; no other pixel does.

As a backend, ``segment`` is the ``base`` segmenter's map refined by SAM, and ``classes`` are the
base's. Weights are read by ``geoxai.weights.read_weights`` (``weights_only=True``): segment-anything's
own ``build_sam`` unpickles checkpoints with plain ``torch.load``, so the model is built empty from
segment-anything's classes and the state dict loaded here. ``model_type`` ``auto`` reads the size
from the checkpoint (vit_b, vit_l or vit_h); ``tiny`` is a 64-pixel model for tests, never for use.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from geoxai import labels as L
from geoxai.devices import resolve_device
from geoxai.errors import GeoxaiError
from geoxai.segmentation.base import Segmenter, from_spec
from geoxai.weights import check_state_dict, read_weights

MODEL_TYPES = ("auto", "vit_b", "vit_l", "vit_h", "tiny")
_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 32: "tiny"}  # image-encoder width -> model type
RELEASES = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/{file}"  # the released files, by name


def build_model(model_type: str) -> torch.nn.Module:
    """An untrained SAM of ``model_type`` (segment-anything's own classes, no weights loaded)."""
    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if model_type in ("vit_b", "vit_l", "vit_h"):
        return sam_model_registry[model_type](checkpoint=None)
    if model_type != "tiny":
        raise GeoxaiError(f"segmenter sam: model_type {model_type!r}: use one of {', '.join(MODEL_TYPES)}")
    # A 64-pixel SAM with the real architecture, small enough for tests to build and run in a second.
    image_size, patch, width, prompt_dim = 64, 16, 32, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=image_size, patch_size=patch, embed_dim=width, depth=2, num_heads=2,
                                      mlp_ratio=2, out_chans=prompt_dim, qkv_bias=True, use_rel_pos=True,
                                      window_size=2, global_attn_indexes=(1,),
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(image_size // patch,) * 2,
                                     input_image_size=(image_size, image_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=2,
                                 iou_head_hidden_dim=prompt_dim,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64,
                                                               num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def load_model(checkpoint: str | Path, model_type: str = "auto") -> tuple[torch.nn.Module, str]:
    """SAM with the weights of ``checkpoint`` (read with ``weights_only=True``) and its model type."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise GeoxaiError(f"segmenter sam: checkpoint {path}: no such file; download a SAM checkpoint (e.g. "
                          f"sam_vit_b_01ec64.pth, see {RELEASES}) on a machine with internet and give its path")
    state = read_weights(path, "segmenter sam: checkpoint")
    for key in ("model", "state_dict"):  # re-saved checkpoints sometimes wrap the state dict
        if isinstance(state, Mapping) and set(state) == {key} and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeoxaiError(f"segmenter sam: checkpoint {path}: not a state dict of tensors; give a SAM checkpoint "
                          f"({RELEASES})")
    if model_type == "auto":
        patch_embed = state.get("image_encoder.patch_embed.proj.weight")
        model_type = _WIDTHS.get(int(patch_embed.shape[0]), "") if patch_embed is not None else ""
        if not model_type:
            raise GeoxaiError(f"segmenter sam: checkpoint {path}: no SAM image encoder of a known size in it; give a "
                              f"SAM checkpoint ({RELEASES}) or its model_type (vit_b, vit_l, vit_h)")
    model = build_model(model_type)
    check_state_dict(model.state_dict(), state, f"segmenter sam: checkpoint {path}",
                     "give the model_type it was trained as (vit_b, vit_l, vit_h) or model_type: auto")
    model.load_state_dict(state)
    return model, model_type


def refine_with_masks(semantic: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """The semantic map with every mask (largest first) set to the majority label the map has under it."""
    refined = semantic.copy()
    for mask in sorted(masks, key=lambda m: int(m.sum()), reverse=True):
        under = semantic[mask]
        if under.size:
            refined[mask] = np.bincount(under.ravel()).argmax()
    return refined


def instances_from_masks(semantic: np.ndarray, class_id: int, masks: Sequence[np.ndarray],
                         min_overlap: float = 0.5) -> np.ndarray:
    """Instance ids (int64 [H, W]; 0 outside the class) of the pixels of ``class_id``, split by SAM masks.

    A mask becomes an instance when at least ``min_overlap`` of it is the class and at least
    ``min_overlap`` of those pixels are still unclaimed (larger masks claim first); see the module doc.
    """
    from scipy import ndimage

    target = semantic == class_id
    blobs, _ = ndimage.label(target)
    out = np.zeros(semantic.shape, dtype=np.int64)
    count = 0
    for mask in sorted(masks, key=lambda m: int(m.sum()), reverse=True):
        inside = mask & target
        size = int(inside.sum())
        if size == 0 or size < min_overlap * int(mask.sum()):
            continue
        free = inside & (out == 0)
        if int(free.sum()) < min_overlap * size:
            continue
        for blob in np.unique(blobs[free]):  # one instance per separate blob of the class it covers
            count += 1
            out[free & (blobs == blob)] = count
    rest, pieces = ndimage.label(target & (out == 0))
    for piece in range(1, pieces + 1):
        region = rest == piece
        touching = out[ndimage.binary_dilation(region) & ~region]
        touching = touching[touching > 0]
        if touching.size:
            out[region] = np.bincount(touching).argmax()
        else:
            count += 1
            out[region] = count
    return out


class SAMSegmenter(torch.nn.Module, Segmenter):
    """Another segmenter's label maps sharpened by Segment Anything masks; also splits a class into instances."""

    name = "sam"
    licence = "SAM weights: Apache-2.0 (segment-anything)"
    inference = "the base segmenter's maps, refined by SAM automatic masks"
    example = ("`name: sam`, `checkpoint: sam_vit_b_01ec64.pth` (a segment-anything release) and "
               "`base: {name: hf, model: nvidia/segformer-b0-finetuned-cityscapes-512-1024}`")

    def __init__(self, checkpoint: str, model_type: str = "auto", base: Mapping[str, Any] | Segmenter | None = None,
                 points_per_side: int = 32, points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 min_mask_region_area: int = 0, min_overlap: float = 0.5, device: str = "auto") -> None:
        super().__init__()
        from segment_anything import SamAutomaticMaskGenerator

        if model_type not in MODEL_TYPES:
            raise GeoxaiError(f"segmenter sam: model_type {model_type!r}: use one of {', '.join(MODEL_TYPES)}")
        if not 0 < float(min_overlap) <= 1:
            raise GeoxaiError(f"segmenter sam: min_overlap {min_overlap}: give a fraction in (0, 1]")
        self.checkpoint, self.device_option, self.min_overlap = str(checkpoint), device, float(min_overlap)
        self.device = resolve_device(device)
        self.settings = {"points_per_side": int(points_per_side), "points_per_batch": int(points_per_batch),
                         "pred_iou_thresh": float(pred_iou_thresh),
                         "stability_score_thresh": float(stability_score_thresh),
                         "box_nms_thresh": float(box_nms_thresh), "crop_n_layers": int(crop_n_layers),
                         "min_mask_region_area": int(min_mask_region_area)}
        sam, self.model_type = load_model(checkpoint, model_type)  # before the base: a bad file fails fast
        self.sam = sam.to(self.device).eval()
        if base is None or isinstance(base, Segmenter):
            self.base = base
        elif isinstance(base, Mapping):
            if base.get("name") == self.name:
                raise GeoxaiError("segmenter sam: base is sam itself; give the segmenter whose maps SAM refines, "
                                  "e.g. {name: hf, model: ...}")
            self.base = from_spec(base, device=device)
        else:
            raise GeoxaiError(f"segmenter sam: base {base!r}: give a segmenter spec like {{name: hf, model: ...}}")
        try:
            self.generator = SamAutomaticMaskGenerator(self.sam, output_mode="binary_mask", **self.settings)
        except ImportError as exc:  # min_mask_region_area needs OpenCV
            raise GeoxaiError(f"segmenter sam: min_mask_region_area {min_mask_region_area} needs {exc.name} "
                              "(pip install opencv-python-headless), or set it to 0") from None
        points = self.settings["points_per_side"]
        refined = f"refined by SAM {self.model_type} masks ({points}x{points} points)"
        if self.base is not None:
            self.classes = tuple(self.base.classes)
            self.licence = f"{SAMSegmenter.licence}; base {self.base.name}: {self.base.licence}"
            self.inference = f"{self.base.inference}, {refined}"
        else:
            self.classes, self.inference = tuple(L.NAMES), f"label maps given by the caller, {refined}"
        self.eval()

    def spec(self) -> dict[str, Any]:
        base = None
        if self.base is not None:
            base = {k: v for k, v in self.base.spec().items() if k != "device"}  # it runs on this one's device
        return {"name": self.name, "checkpoint": self.checkpoint, "model_type": self.model_type, "base": base,
                **self.settings, "min_overlap": self.min_overlap, "device": self.device_option}

    @torch.no_grad()
    def masks(self, images: torch.Tensor) -> list[list[np.ndarray]]:
        """SAM's automatic masks (bool [H, W], largest first) of each image [B, 3, H, W] in [0, 1]."""
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        found = []
        for image in pixels:
            records = sorted(self.generator.generate(np.ascontiguousarray(image)), key=lambda r: r["area"],
                             reverse=True)
            found.append([np.asarray(r["segmentation"], dtype=bool) for r in records])
        return found

    def _maps(self, images: torch.Tensor, semantic_maps: torch.Tensor | None) -> np.ndarray:
        if semantic_maps is None:
            if self.base is None:
                raise GeoxaiError("segmenter sam: no base segmenter to refine; give base: {name: hf, model: ...} "
                                  "or pass the label maps")
            semantic_maps = self.base.segment(images)
        semantic = torch.as_tensor(semantic_maps).long().cpu().numpy()
        if semantic.shape != (images.shape[0], *images.shape[-2:]) or semantic.min(initial=0) < 0:
            raise GeoxaiError(f"segmenter sam: label maps {list(semantic.shape)} do not fit images "
                              f"{list(images.shape)} (need [B, H, W] of non-negative ids)")
        return semantic

    def refine(self, images: torch.Tensor, semantic_maps: torch.Tensor | None = None,
               masks: list[list[np.ndarray]] | None = None) -> torch.Tensor:
        """Label maps [B, H, W] sharpened by SAM masks (the base's maps when none are given)."""
        semantic = self._maps(images, semantic_maps)
        masks = self.masks(images) if masks is None else masks
        refined = [refine_with_masks(labels, image_masks) for labels, image_masks in zip(semantic, masks, strict=True)]
        return torch.from_numpy(np.stack(refined)).long().to(images.device)

    def instances(self, images: torch.Tensor, class_id: int, semantic_maps: torch.Tensor | None = None,
                  masks: list[list[np.ndarray]] | None = None) -> torch.Tensor:
        """Instance ids [B, H, W] of the pixels of ``class_id`` (0 elsewhere), e.g. one id per window.

        Without ``semantic_maps`` the class pixels are those of ``segment`` (the base's maps refined by
        the same masks), so instances and label maps agree; SAM runs once either way.
        """
        masks = self.masks(images) if masks is None else masks
        if semantic_maps is None:
            semantic_maps = self.refine(images, masks=masks)
        semantic = self._maps(images, semantic_maps)
        found = [instances_from_masks(labels, int(class_id), image_masks, self.min_overlap)
                 for labels, image_masks in zip(semantic, masks, strict=True)]
        return torch.from_numpy(np.stack(found)).long().to(images.device)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """The base segmenter's canonical label maps, refined by SAM masks."""
        return self.refine(images)
