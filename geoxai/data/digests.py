"""Images identified by their content: sha256 of the file's bytes.

The artifact store keys every result by content, so a copied or renamed dataset reuses what was
computed, and two names for one image are recognised as the same image (``find_duplicates``).
Digests are remembered in the store by (absolute path, size, modification time), so a large dataset
is read in full once, not on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geoxai.store import file_digests


@dataclass
class Duplicates:
    """Files with identical bytes, within and across named groups (``database``, ``queries``)."""

    groups: list[list[tuple[str, Path]]] = field(default_factory=list)  # each: (group name, path) with one digest

    @property
    def files(self) -> int:
        """Files that have an identical twin somewhere."""
        return sum(len(g) for g in self.groups)

    def across(self, a: str, b: str) -> list[Path]:
        """Files of group ``a`` with an identical file in group ``b``."""
        return [path for group in self.groups if any(name == b for name, _ in group)
                for name, path in group if name == a]

    def within(self, name: str) -> int:
        """Files of group ``name`` that duplicate another file of the same group (beyond the first)."""
        return sum(max(0, sum(n == name for n, _ in group) - 1) for group in self.groups)

    def format(self) -> str:
        """One line: how many groups, how many files, the first example."""
        if not self.groups:
            return "exact duplicates: none"
        first = self.groups[0]
        example = " == ".join(f"{name}/{path.name}" for name, path in first[:2])
        return f"exact duplicates (identical bytes): {len(self.groups)} group(s), {self.files} files, e.g. {example}"


def find_duplicates(named: Mapping[str, Sequence[str | Path]], progress: bool = False) -> Duplicates:
    """Groups of byte-identical files among the named lists of paths (by content digest)."""
    entries = [(name, Path(p)) for name, paths in named.items() for p in paths]
    digests = file_digests([p for _, p in entries], progress=progress)
    by_digest: dict[str, list[tuple[str, Path]]] = {}
    for entry, digest in zip(entries, digests, strict=True):
        if not digest.startswith("unreadable:"):
            by_digest.setdefault(digest, []).append(entry)
    return Duplicates([group for group in by_digest.values() if len(group) > 1])
