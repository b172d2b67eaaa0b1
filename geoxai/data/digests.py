"""Images identified by their content: sha256 of the file's bytes.

The artifact store keys every result by content, so a copied or renamed dataset reuses what was
computed, and two names for one image are recognised as the same image (``find_duplicates``).
Digests are remembered in the store by (absolute path, size, modification time), so a large dataset
is read in full once, not on every run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_BLOCK = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return hashlib.sha1(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()


def _digest_or_missing(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError:  # a vanished or unreadable file: its own key, so loading it reports the error
        return "unreadable:" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()


def file_digests(paths: Sequence[str | Path], progress: bool = False, store: object | None = None) -> list[str]:
    """Content digests of ``paths`` in order, remembered in the artifact store by path, size and mtime."""
    from tqdm.auto import tqdm

    from geoxai.store import ArtifactStore

    paths = [Path(p) for p in paths]
    memory = (store or ArtifactStore()).namespace("digest", "sha256", {})
    stat_keys = [_stat_key(p) for p in paths]
    known = {k for k in stat_keys if k is not None and k in memory}
    todo = [i for i, k in enumerate(stat_keys) if k is None or k not in known]
    found: dict[int, str] = {}
    if todo:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool, \
                tqdm(total=len(todo), desc="hashing", unit="img", disable=not progress or len(todo) < 2000) as bar:
            for start in range(0, len(todo), 4096):
                chunk = todo[start:start + 4096]
                for i, digest in zip(chunk, pool.map(_digest_or_missing, [paths[i] for i in chunk]), strict=True):
                    found[i] = digest
                bar.update(len(chunk))
                new = {stat_keys[i]: np.frombuffer(bytes.fromhex(found[i]), dtype=np.uint8) for i in chunk
                       if stat_keys[i] is not None and not found[i].startswith("unreadable:")}
                memory.put_many(new)
    out = []
    for i, key in enumerate(stat_keys):
        out.append(found[i] if i in found else bytes(memory.get(key)).hex())
    return out


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
