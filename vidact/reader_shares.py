"""Each DALI reader's share of a split, as files it reads: the tars holding samples
[N*k//S, N*(k+1)//S) of the split (DALI's own split of S readers) and, beside each, an index
listing only those samples, so that a reader built with ``num_shards=1`` reads exactly what
``shard_id=k, num_shards=S`` over every tar would, while opening only its own tars (DALI opens
every tar it is given each time a reader is built). The indexes live in this process's folder
of index copies (`cache_folder`, removed at exit), with a remote set's fetched indexes."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path


@functools.cache
def cache_folder() -> str:
    """This process's folder of DALI index copies and shares, removed at exit."""
    folder = tempfile.mkdtemp(prefix="vidact-indexes-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def index_header(text: str, name: str) -> tuple[str, int]:
    """(version, samples) of a DALI index's first line ('v1.2 N'); a malformed one is a ValueError
    naming the index `name`."""
    try:
        version, count = text.split("\n", 1)[0].split()[:2]
        return version, int(count)
    except ValueError as e:
        raise ValueError(f"{name}: unreadable index ({e}); re-run vidact-shards") from e


def write_share(tars: list[str], indexes: list[str], texts: list[str], reader: int, readers: int,
                split: str) -> tuple[list[str], list[str]]:
    """(tars, index paths) of reader `reader` of `readers`, from the split's tars, their index
    names and texts; a malformed index is a ValueError naming it."""
    tables = [(tar, idx, text.splitlines()) for tar, idx, text in zip(tars, indexes, texts)]
    total = sum(len(lines) - 1 for _, _, lines in tables)
    lo, hi = total * reader // readers, total * (reader + 1) // readers
    folder = tempfile.mkdtemp(prefix=f"{split}-{reader}of{readers}-", dir=cache_folder())
    out_tars, out_indexes, start = [], [], 0
    for tar, idx, lines in tables:
        version, count = index_header(lines[0] if lines else "", idx)
        body = lines[1:]
        if count != len(body):
            raise ValueError(f"{idx}: says {count} samples, lists {len(body)}; re-run vidact-shards")
        a, b = max(lo, start), min(hi, start + len(body))
        if a < b:
            kept = body[a - start:b - start]
            out_indexes.append(os.path.join(folder, f"{len(out_indexes):06d}.idx"))
            Path(out_indexes[-1]).write_text(f"{version} {len(kept)}\n" + "".join(f"{line}\n" for line in kept))
            out_tars.append(tar)
        start += len(body)
    return out_tars, out_indexes
