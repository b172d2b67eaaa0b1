"""Artifacts: what plugins read about an image, computed once per image content for all of them.

A plugin says what it ``needs``; every need is a kind in ``KINDS`` (``descriptor``, ``database``,
``image``, ``lab``, ``segmentation``), one ``ArtifactKind`` class each, registered with
``@artifact_kind``. A kind owns its options (read from the evaluation's settings), its checks (one-line
errors before anything is computed), its identity (what the EVAL folder's state file records) and its
computation: ``compute`` for every distinct image the evaluation touches (originals, generations,
reference photos, database images where the kind asks for them), before any plugin runs. Values live
in the artifact store (``geoxai.store``), so an original is processed once whatever the number of
samples and plugins, and later evaluations reuse them. ``compute`` takes a ``shard=(rank, world)``
so that several processes (one per GPU) split the work. The runner asks ``plan`` for the kinds the
plugins need and never names one: a new kind is one class and the decorator line above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from geoxai.errors import GeoxaiError
from geoxai.store import ArtifactStore, ImageArtifacts

if TYPE_CHECKING:
    from geoxai.evaluation.context import Database

LAB_FIELDS = ("L_mean", "L_std", "a_mean", "b_mean")


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an RGB image [H, W, 3] in [0, 1] (scikit-image's conversion)."""
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(image, 0.0, 1.0))


def lab_statistics(image: np.ndarray) -> np.ndarray:
    """[L* mean, L* std (contrast), a* mean, b* mean] of an RGB image [H, W, 3] in [0, 1]."""
    lab = rgb_to_lab(image).reshape(-1, 3)
    return np.array([lab[:, 0].mean(), lab[:, 0].std(), lab[:, 1].mean(), lab[:, 2].mean()], dtype=np.float32)


def collate_list(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Like ``collate_images`` but keeps images of different sizes as a list (no stacking)."""
    import torch

    good = [item for item in batch if item["image"] is not None]
    return {"index": torch.tensor([item["index"] for item in good], dtype=torch.long),
            "image": [item["image"] for item in good] or None,
            "skipped": [(item["index"], item["error"]) for item in batch if item["image"] is None],
            "sizes": [item.get("size") for item in good]}


@dataclass(frozen=True)
class ArtifactSettings:
    """What artifact kinds read their options from: the evaluation's settings and the run's."""

    run: Path
    run_settings: Mapping[str, Any] = field(default_factory=dict)
    embedder_spec: Mapping[str, Any] | None = None  # None: the embedder the run records
    segmenter_spec: Mapping[str, Any] | None = None
    database: str | Path | None = None
    batch_size: int = 32
    device: str = "auto"
    num_workers: int | None = None

    @property
    def embedder(self) -> dict[str, Any]:
        """The evaluation's embedder spec: the one given, else the one the run's generations were conditioned on."""
        if self.embedder_spec is not None:
            return dict(self.embedder_spec)
        return dict(self.run_settings.get("embedder") or {})


class ArtifactKind:
    """One kind of artifact a plugin may need: its options, checks, identity and computation.

    A subclass sets ``name`` and implements ``compute``; ``check`` refuses missing inputs with a
    one-line error before anything is computed, ``from_settings`` builds it from the evaluation's
    settings, ``options`` and ``in_worker`` rebuild it in another process, ``state`` is its identity
    in the EVAL folder's state file (keys ``state_keys``, the identity first).
    """

    name: ClassVar[str] = ""
    stores: ClassVar[bool] = True  # values kept in the store: counted, sharded, looked up by plugins
    fallback: ClassVar[bool] = False  # computed only when no kind that stores values is
    planned_by: ClassVar[tuple[str, ...]] = ()  # needs other than its name that bring this kind
    state_keys: ClassVar[tuple[str, ...]] = ()
    random_weights_key: ClassVar[str] = ""  # its entry in results.json's random_weights ("": none)

    @classmethod
    def check(cls, settings: ArtifactSettings, users: Sequence[type]) -> None:
        """Refuse, with a one-line ``GeoxaiError``, an evaluation that lacks this kind's inputs."""

    @classmethod
    def from_settings(cls, settings: ArtifactSettings, users: Sequence[type]) -> ArtifactKind:
        """The kind with its options from the evaluation's settings (``users``: the plugins that need it)."""
        return cls()

    @classmethod
    def in_worker(cls, options: Mapping[str, Any], device: str) -> ArtifactKind:
        """The kind rebuilt from ``options`` in a process of a sharded computation on ``device``."""
        return cls(**options)

    def options(self) -> dict[str, Any]:
        """What ``in_worker`` rebuilds the kind from (picklable)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Its identity in the state file (``state_keys``): another identity is another evaluation."""
        return {}

    def images(self, images: set[Path], database: Database | None) -> set[Path]:
        """The images to compute it for (default: those of the pairs)."""
        return set(images)

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "") -> ImageArtifacts:
        """Values for ``paths`` (by image content), from the store or computed through it."""
        raise NotImplementedError(f"artifact kind {self.name} computes nothing")

    def context(self) -> dict[str, Any]:
        """What it gives the ``EvaluationContext`` besides its values (a backend plugins use)."""
        return {}

    def warnings(self) -> list[str]:
        """WARNING lines for the console and the notices."""
        return []

    @property
    def random_weights(self) -> bool:
        """Whether its backend has untrained (random) weights."""
        return False

    @classmethod
    def backend(cls, state: Mapping[str, Any], planned: ArtifactKind | None) -> dict[str, Any]:
        """Its backend in results.json (``{}``: it has none)."""
        return {}

    @classmethod
    def domain_model(cls, state: Mapping[str, Any], planned: ArtifactKind | None,
                     settings: ArtifactSettings) -> str | None:
        """The shipped model it runs on the images (for the domain check), or None."""
        return None


KINDS: dict[str, type[ArtifactKind]] = {}


def artifact_kind(cls: type[ArtifactKind]) -> type[ArtifactKind]:
    """Register ``cls`` under its name: plugins may then declare it in ``needs``."""
    if not (isinstance(cls, type) and issubclass(cls, ArtifactKind)) or not cls.name:
        raise TypeError(f"{cls!r}: an artifact kind is an ArtifactKind subclass with a name")
    KINDS[cls.name] = cls
    return cls


@artifact_kind
class DescriptorArtifact(ArtifactKind):
    """Descriptors of the evaluation's embedder (``geoxai.embedders.descriptors``), for every image of
    the pairs and, with a database, every database image (retrieval, top-1 checks)."""

    name = kind = "descriptor"
    planned_by = ("database",)
    state_keys = ("embedder", "embedder_spec")
    random_weights_key = "embedder"

    def __init__(self, embedder_spec: Mapping[str, Any], device: str = "auto", batch_size: int = 32,
                 num_workers: int | None = None, embedder: Any = None) -> None:
        self.embedder_spec, self.device = dict(embedder_spec), device
        self.batch_size, self.num_workers = int(batch_size), num_workers
        self._embedder = embedder

    @classmethod
    def check(cls, settings: ArtifactSettings, users: Sequence[type]) -> None:
        if not settings.embedder:
            raise GeoxaiError(f"{settings.run}: the run does not record the embedder its generations were conditioned "
                              "on; give one with --embedder-config FILE (or --embedder and its options)")

    @classmethod
    def from_settings(cls, settings: ArtifactSettings, users: Sequence[type]) -> ArtifactKind:
        from geoxai.embedders import from_spec
        from geoxai.retrieval import check_trained

        spec = settings.embedder
        embedder = from_spec(spec, device=settings.device)
        check_trained(embedder, spec)
        return cls(spec, device=settings.device, batch_size=settings.batch_size, num_workers=settings.num_workers,
                   embedder=embedder)

    @classmethod
    def in_worker(cls, options: Mapping[str, Any], device: str) -> ArtifactKind:
        return cls(**options, device=device)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from geoxai.embedders import from_spec

            self._embedder = from_spec(self.embedder_spec, device=self.device)
        return self._embedder

    def options(self) -> dict[str, Any]:
        return {"embedder_spec": self.embedder_spec, "batch_size": self.batch_size, "num_workers": self.num_workers}

    def state(self) -> dict[str, Any]:
        return {"embedder": self.embedder.identity(), "embedder_spec": self.embedder_spec}

    def images(self, images: set[Path], database: Database | None) -> set[Path]:
        return set(images) | (set(database.paths) if database is not None else set())

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "descriptors") -> ImageArtifacts:
        from geoxai.embedders.descriptors import embed_files

        found = embed_files(self.embedder, paths, batch_size=self.batch_size, progress=progress,
                            num_workers=self.num_workers, desc=desc, store=store, shard=shard)
        values = {key: row for key, row, ok in zip(found.digests, found.array, found.readable, strict=True) if ok}
        self.last = found
        return ImageArtifacts(keys=found.digests, values=values, skipped=found.skipped, computed=found.computed)

    def context(self) -> dict[str, Any]:
        return {"embedder_provider": self}

    @property
    def random_weights(self) -> bool:
        return bool(self.embedder.random_weights)

    def warnings(self) -> list[str]:
        if not self.random_weights:
            return []
        named = ", ".join(f"{k} {v}" for k, v in self.embedder_spec.items())
        return [f"the evaluation's embedder has RANDOM weights ({named}): its numbers are an untrained network "
                "baseline, not a VPR model"]

    @classmethod
    def backend(cls, state: Mapping[str, Any], planned: ArtifactKind | None) -> dict[str, Any]:
        return {"embedder": {"spec": state["embedder_spec"], "identity": state["embedder"]}}

    @classmethod
    def domain_model(cls, state: Mapping[str, Any], planned: ArtifactKind | None,
                     settings: ArtifactSettings) -> str | None:
        from geoxai.domain import embedder_model

        return embedder_model(settings.embedder if state.get("embedder") else None)


@artifact_kind
class DatabaseNeed(ArtifactKind):
    """``database``: the plugin retrieves against ``--database`` (its descriptors come with ``descriptor``)."""

    name = "database"
    stores = False

    @classmethod
    def check(cls, settings: ArtifactSettings, users: Sequence[type]) -> None:
        if settings.database is None:
            raise GeoxaiError(f"plugin {users[0].name} needs --database DIR (database images named by UTM, e.g. "
                              "worlds/synthcity/database): generations are retrieved against it")


@artifact_kind
class ImageNeed(ArtifactKind):
    """``image``: the plugin reads pixels (``ctx.image``, decoded once per evaluation). Nothing is stored;
    computing it gives every image's content digest and skips the images that do not decode, which
    every kind that stores values does anyway, so it runs only when no such kind does."""

    name = "image"
    stores = False
    fallback = True

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "images") -> ImageArtifacts:
        from geoxai.data.images import load_rgb
        from geoxai.errors import UnreadableImageError
        from geoxai.store import file_digests

        keys = file_digests(paths, progress=progress, store=store)
        skipped = []
        for path in paths:
            try:
                load_rgb(path)
            except UnreadableImageError as exc:  # the error itself: errors.csv keeps its traceback
                skipped.append((Path(path), exc))
        return ImageArtifacts(keys=keys, values={}, skipped=skipped, computed=0)


@artifact_kind
class LabArtifact(ArtifactKind):
    """CIELAB statistics of each image: L* mean and standard deviation (contrast), a* and b* means."""

    name = kind = "lab"
    settings = {"fields": list(LAB_FIELDS), "colour_space": "CIELAB D65 (skimage.color.rgb2lab)", "version": 1}

    def __init__(self, batch_size: int = 32, num_workers: int = 0) -> None:
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)

    @classmethod
    def from_settings(cls, settings: ArtifactSettings, users: Sequence[type]) -> ArtifactKind:
        return cls(batch_size=settings.batch_size)

    def options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "colour statistics") -> ImageArtifacts:
        from geoxai.data.images import ImageDataset
        from geoxai.store import compute_for_images

        namespace = store.namespace(self.kind, "cielab", self.settings)

        def compute(batch: dict[str, Any]) -> np.ndarray:
            return np.stack([lab_statistics(image.permute(1, 2, 0).numpy()) for image in batch["image"]])

        return compute_for_images(namespace, paths, compute, dataset=lambda todo: ImageDataset(todo),
                                  collate=collate_list, batch_size=self.batch_size, num_workers=self.num_workers,
                                  progress=progress, desc=desc, shard=shard)


@artifact_kind
class SegmentationArtifact(ArtifactKind):
    """Label maps (canonical ids, uint8 [H, W]) of the evaluation's segmenter, one per image content."""

    name = kind = "segmentation"
    state_keys = ("segmenter",)

    def __init__(self, segmenter_spec: Mapping[str, Any], batch_size: int = 16, device: str = "auto") -> None:
        self.segmenter_spec, self.batch_size, self.device = dict(segmenter_spec), int(batch_size), device
        self._segmenter = None

    @classmethod
    def check(cls, settings: ArtifactSettings, users: Sequence[type]) -> None:
        if settings.segmenter_spec is None:
            raise GeoxaiError(f"plugin {users[0].name} needs --segmenter NAME (see `geoxai segmenters`): groundtruth "
                              "for SynthCity worlds and reference runs, synthcity for generated SynthCity images, "
                              "hf for photos")

    @classmethod
    def from_settings(cls, settings: ArtifactSettings, users: Sequence[type]) -> ArtifactKind:
        from geoxai.segmentation.base import check_classes

        kind = cls(dict(settings.segmenter_spec or {}), batch_size=settings.batch_size, device=settings.device)
        for user in users:
            check_classes(kind.segmenter, user.name, user.segmentation_classes)
        return kind

    @property
    def segmenter(self) -> Any:
        if self._segmenter is None:
            from geoxai.segmentation.base import from_spec

            self._segmenter = from_spec(self.segmenter_spec, device=self.device)
        return self._segmenter

    def options(self) -> dict[str, Any]:
        return {"segmenter_spec": self.segmenter_spec, "batch_size": self.batch_size}

    def state(self) -> dict[str, Any]:
        return {"segmenter": self.segmenter.identity()}

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "segmentation") -> ImageArtifacts:
        from tqdm.auto import tqdm

        from geoxai.store import file_digests

        segmenter = self.segmenter
        namespace = store.namespace(self.kind, segmenter.identity(), {"inference": segmenter.inference, "version": 1})
        paths = [Path(p) for p in paths]
        keys = file_digests(paths, progress=progress, store=store)
        first: dict[str, Path] = {}
        for path, key in zip(paths, keys, strict=True):
            first.setdefault(key, path)
        rank, world = shard
        todo = namespace.missing(keys)[rank::world]
        skipped: dict[str, str] = {}
        computed = 0
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or rank != 0) as bar:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                maps = segmenter.segment_files([first[k] for k in batch])
                done = {k: m for k, m in zip(batch, maps, strict=True) if m is not None}
                skipped.update({k: f"{first[k]}: unreadable image (the segmenter could not read it)"
                                for k, m in zip(batch, maps, strict=True) if m is None})
                namespace.put_many(done)
                computed += len(done)
                bar.update(len(batch))
        values = {k: namespace.get(k) for k in dict.fromkeys(keys) if k not in skipped and k in namespace}
        unreadable = [(path, skipped[key]) for path, key in zip(paths, keys, strict=True) if key in skipped]
        return ImageArtifacts(keys=keys, values=values, skipped=unreadable, computed=computed)

    def context(self) -> dict[str, Any]:
        return {"segmenter": self.segmenter}

    @classmethod
    def backend(cls, state: Mapping[str, Any], planned: ArtifactKind | None) -> dict[str, Any]:
        record = {**planned.segmenter.describe(), "identity": state["segmenter"]} if planned is not None else None
        return {"segmenter": record}

    @classmethod
    def domain_model(cls, state: Mapping[str, Any], planned: ArtifactKind | None,
                     settings: ArtifactSettings) -> str | None:
        from geoxai.domain import segmenter_model

        return segmenter_model(planned.segmenter.spec() if planned is not None else None)


# ---------------------------------------------------------------------------------- the plan
@dataclass
class ArtifactPlan:
    """The kinds an evaluation computes (built, checked), with what they tell the state file and results."""

    settings: ArtifactSettings
    kinds: dict[str, ArtifactKind]  # every needed kind, registry order

    @property
    def computed_kinds(self) -> list[ArtifactKind]:
        """The kinds whose ``compute`` runs: those that store values, else the fallback (digests, decoding)."""
        stored = [kind for kind in self.kinds.values() if kind.stores]
        return stored or [cls.from_settings(self.settings, []) for cls in KINDS.values() if cls.fallback]

    def state(self) -> dict[str, Any]:
        """Every kind's identity keys (None for a kind not needed now), in registry order."""
        found = {key: None for cls in KINDS.values() for key in cls.state_keys}
        for kind in self.kinds.values():
            found.update(kind.state())
        return found

    def backends(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {name: record for cls in KINDS.values() for name, record in cls.backend(state, self.kinds.get(cls.name)).items()}

    def domain_models(self, state: Mapping[str, Any]) -> list[str | None]:
        return [cls.domain_model(state, self.kinds.get(cls.name), self.settings) for cls in KINDS.values()]

    def context(self) -> dict[str, Any]:
        return {key: value for kind in self.kinds.values() for key, value in kind.context().items()}

    def warnings(self) -> list[str]:
        return [line for kind in self.kinds.values() for line in kind.warnings()]

    def random_weights(self) -> dict[str, bool]:
        """Per backend (``random_weights_key``), whether it has untrained (random) weights."""
        return {cls.random_weights_key: bool(self.kinds[cls.name].random_weights if cls.name in self.kinds else False)
                for cls in KINDS.values() if cls.random_weights_key}


def needed(plugins: Sequence[type]) -> dict[str, list[type]]:
    """Kind name -> the plugins that need it, registry order (a kind also comes with its ``planned_by`` needs)."""
    return {name: users for name, cls in KINDS.items()
            if (users := [p for p in plugins if name in p.needs or set(cls.planned_by) & set(p.needs)])}


def check(plugins: Sequence[type], settings: ArtifactSettings) -> None:
    """Every needed kind's inputs are there (one-line errors, before anything is computed); the needs that
    store nothing (``database``: an option to give) are checked before the kinds that compute."""
    for name, users in sorted(needed(plugins).items(), key=lambda item: KINDS[item[0]].stores):
        KINDS[name].check(settings, users)


def plan(plugins: Sequence[type], settings: ArtifactSettings) -> ArtifactPlan:
    """The kinds ``plugins`` need, checked and built from ``settings``."""
    check(plugins, settings)
    return ArtifactPlan(settings, {name: KINDS[name].from_settings(settings, users)
                                   for name, users in needed(plugins).items()})

