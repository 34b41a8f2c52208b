"""Clip ids that identify: the stem, made longer only where stems collide (the shard maker's
ids, and ``vidact.predict --videos``'s, so a file gets the id its shard clip would).

CSV lists and submission files name clips by stem, so every id stays the stem unless another
source of the same set has the same one (``movie-hello.avi`` beside ``movie-hello.mp4``, or
``jump/x.avi`` beside ``run/x.avi``). Colliding sources move up, together, one level at a time:
the name with its extension (``movie-hello_avi``), then the path below the root
(``jump_x_avi``), then a ``-2``, ``-3`` suffix in path order. Longer ids are WebDataset keys
already (no dots: DALI's reader takes the text after the *first* dot as the extension), and two
ids never map to the same key, so ``id -> key`` is one-to-one within a set.

Segments (``make_shards --max-seconds``): segment k of source ``x`` has id ``x@k`` and key
``{key of x}_k``. Every source of such a set is segmented (a short one into ``x@0``), so all its
keys end in ``_k``: cut at the last ``_``, a key gives back its source key and k, and unique
source keys give unique segment keys. The source of a segment id is the text before its last ``@``
(`vidact.shards.source_id_of`: the loaders' side reads it too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vidact.shards import SEGMENT_SEP, sample_key

LEVELS = 3  # stem, name with extension, relative path


class HasId(Protocol):
    id: str
    key: str
    path: Path


def _candidate(s: HasId, rel: str, level: int) -> str:
    if level == 0:
        return s.id
    if level == 1:
        return sample_key(s.path.name)
    return sample_key(rel)


def _collisions(ids: dict[int, str]) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, v in ids.items():
        groups[sample_key(v)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def assign_ids(sources: Sequence[HasId], root: Path) -> None:
    """Sets ``id`` (from the stem in ``id``) and ``key`` of every source, unique across
    `sources`; deterministic for the same set of paths, whatever their order."""
    rels = [s.path.relative_to(root).as_posix() if s.path.is_relative_to(root) else str(s.path)
            for s in sources]
    level = [0] * len(sources)
    while True:
        ids = {i: _candidate(s, rels[i], level[i]) for i, s in enumerate(sources)}
        moved = False
        for group in _collisions(ids):
            for i in group:
                if level[i] < LEVELS - 1:
                    level[i] += 1
                    moved = True
        if not moved:
            break
    taken = {sample_key(v) for v in ids.values()}
    for group in _collisions(ids):  # same path-derived key at the last level: number them
        for n, i in enumerate(sorted(group, key=lambda i: rels[i])[1:], start=2):
            while sample_key(f"{ids[i]}-{n}") in taken:
                n += 1
            ids[i] = f"{ids[i]}-{n}"
            taken.add(sample_key(ids[i]))
    for i, s in enumerate(sources):
        s.id, s.key = ids[i], sample_key(ids[i])


def segment_id(source_id: str, k: int) -> str:
    """The id of segment `k` of a source cut by ``--max-seconds``."""
    return f"{source_id}{SEGMENT_SEP}{k}"


def segment_key(source_key: str, k: int) -> str:
    """The WebDataset key of segment `k` (`source_key` is already safe: no dots)."""
    return f"{source_key}_{k}"
