"""CosPlace groups: training images split into classes (UTM cell x heading bin) and groups of classes.

A class is an M x M metre cell and an alpha-degree heading bin. Neighbouring classes look alike (the
same street seen from a few metres away), so CosPlace never trains them against each other: classes
whose cells are N cells and L heading bins apart form a group, and each group gets its own
classifier. Within a group, any two classes are at least M * (N - 1) metres or alpha * (L - 1) degrees
apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geoxai.errors import GeoxaiError

ClassId = tuple[float, float, float]
GroupId = tuple[int, int, int]


def class_and_group_ids(
    utm_east: np.ndarray | float,
    utm_north: np.ndarray | float,
    heading: np.ndarray | float,
    M: float = 10,
    alpha: float = 30,
    N: int = 5,
    L: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids [n, 3] (cell corner east, north, heading bin start) and group ids [n, 3] (ints).

    ``class = (east // M * M, north // M * M, heading // alpha * alpha)`` and
    ``group = (class_east % (M * N) // M, class_north % (M * N) // M, class_heading % (alpha * L) // alpha)``
    as in the CosPlace paper. Floor division, so negative coordinates fall in the cell below them.
    Headings are taken modulo 360 first (-30 and 330 are one direction); a missing heading counts as 0.
    """
    east = np.atleast_1d(np.asarray(utm_east, dtype=np.float64))
    north = np.atleast_1d(np.asarray(utm_north, dtype=np.float64))
    head = np.mod(np.nan_to_num(np.atleast_1d(np.asarray(heading, dtype=np.float64)), nan=0.0), 360.0)
    classes = np.stack([east // M * M, north // M * M, head // alpha * alpha], axis=1)
    groups = np.stack([
        classes[:, 0] % (M * N) // M,
        classes[:, 1] % (M * N) // M,
        classes[:, 2] % (alpha * L) // alpha,
    ], axis=1).astype(np.int64)
    return classes, groups


@dataclass
class CosGroup:
    """One group: its id and, per class, the class id and the image paths in it."""

    group_id: GroupId
    class_ids: list[ClassId] = field(default_factory=list)
    images: list[list[str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def num_images(self) -> int:
        return sum(len(paths) for paths in self.images)


def build_groups(
    frame: pd.DataFrame,
    M: float = 10,
    alpha: float = 30,
    N: int = 5,
    L: int = 2,
    min_images_per_class: int = 10,
    num_groups: int | None = None,
    where: str = "training set",
) -> list[CosGroup]:
    """Group a training table (columns path, utm_east, utm_north, heading) into CosPlace groups.

    Classes with fewer than ``min_images_per_class`` images are dropped, then groups with fewer
    than two classes (a one-class softmax has nothing to learn). Groups come largest first (ties by
    group id) so that ``num_groups`` keeps the richest ones; classes and images are sorted, so the
    result is the same on every run and every process.
    """
    for key, value in (("M", M), ("alpha", alpha), ("N", N), ("L", L)):
        if not value or value <= 0:
            raise GeoxaiError(f"groups.{key}={value!r}: must be a positive number")
    if len(frame) == 0:
        raise GeoxaiError(f"{where}: no training images found; point data.train_dir at a folder of VPR images")
    classes, groups = class_and_group_ids(frame["utm_east"].to_numpy(), frame["utm_north"].to_numpy(),
                                          frame["heading"].to_numpy(), M, alpha, N, L)
    table = pd.DataFrame({
        "path": frame["path"].astype(str).to_numpy(),
        "class_id": [tuple(float(v) for v in row) for row in classes],
        "group_id": [tuple(int(v) for v in row) for row in groups],
    })
    sizes = table.groupby("class_id")["path"].transform("size")
    kept = table[sizes >= min_images_per_class]
    if kept.empty:
        largest = int(sizes.max())
        raise GeoxaiError(
            f"{where}: no class (a {M} m cell x {alpha} deg heading bin) has at least "
            f"groups.min_images_per_class={min_images_per_class} images (the largest has {largest}); "
            f"lower it, e.g. groups.min_images_per_class={largest}"
        )
    result = []
    for group_id, members in kept.groupby("group_id", sort=True):
        per_class = members.groupby("class_id", sort=True)["path"].apply(sorted)
        if len(per_class) < 2:
            continue
        result.append(CosGroup(group_id, list(per_class.index), list(per_class.to_numpy())))
    if not result:
        raise GeoxaiError(
            f"{where}: every group has fewer than 2 classes with >= {min_images_per_class} images; "
            "lower groups.min_images_per_class or groups.N / groups.L (fewer, larger groups)"
        )
    result.sort(key=lambda g: (-g.num_classes, g.group_id))
    if num_groups is not None:
        result = result[: int(num_groups)]
    return result


def describe_groups(groups: list[CosGroup]) -> str:
    """One line: number of groups, classes and images per group."""
    classes = [g.num_classes for g in groups]
    images = [g.num_images for g in groups]
    return (f"{len(groups)} groups; classes per group {classes}; images per group {images}")
