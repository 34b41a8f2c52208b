"""``vidact-shards verify SET``: every tar and index of a shard set (a folder or s3://) against its
``.sha256``, and every sample against its checksum and tables (`vidact.sample_check`, the checks
both loaders make before decoding); what is damaged is listed, one line each, and the exit status
is 1 if anything is."""

from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
from tqdm import tqdm

from vidact import cli, storage
from vidact.sample_check import check_sample
from vidact.shards import (
    SPLITS,
    ShardError,
    ShardSet,
    checksum_name,
    iter_tar_samples,
    member_exts,
    parse_checksums,
)


def sha256_of(url: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(url) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problems(shards: ShardSet, tar: str, idx: str) -> list[str]:
    """A shard's tar and index against the sums its ``.sha256`` lists."""
    name = storage.basename(tar)
    try:
        sums = parse_checksums(shards.read_text(shards.url(checksum_name(name))))
    except ShardError as e:
        return [f"{e} (no checksum file: the shard may be unfinished)"]
    return [f"{url}: sha256 differs from {checksum_name(name)}'s: damaged since it was written"
            for url in (tar, idx) if sums.get(storage.basename(url)) != sha256_of(url)]


def sample_problems(shards: ShardSet, tar: str) -> tuple[int, list[str]]:
    """(samples read, one line per damaged sample) of a shard."""
    exts = member_exts(shards.video_ext, checksum=shards.checksummed)
    count, problems = 0, []
    try:
        for key, sample in iter_tar_samples(tar):
            count += 1
            numbers = {e: np.frombuffer(d, "<i4") if e.endswith(".i32") else d for e, d in sample.items() if e in exts}
            reason = check_sample(numbers, shards.video_ext)
            if reason:
                problems.append(f"{tar}: sample {key}: {reason}")
    except ShardError as e:
        problems.append(str(e))
    return count, problems


def verify(root: str) -> tuple[int, list[str], str | None]:
    """(samples checked, problems, a note) of the shard set at `root`."""
    shards = ShardSet.open(root)
    note = None if shards.checksummed else "written before per-sample checksums: tables checked, bytes not"
    splits = [s for s in SPLITS if s in shards.manifest["splits"] and shards.manifest["splits"][s]["shards"]]
    pairs = [(t, i) for s in splits for t, i in zip(shards.tars(s), shards.indexes(s))]
    count, problems = 0, []
    for tar, idx in tqdm(pairs, desc="verify", unit="shard", disable=None):
        problems += file_problems(shards, tar, idx)
        n, bad = sample_problems(shards, tar)
        count, problems = count + n, problems + bad
    return count, problems, note


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("vidact.prep.verify", __doc__)
    p.prog = f"{cli.prog('vidact.prep.make_shards')} verify"
    p.add_argument("shards", help="the shard set: a folder or s3://bucket/prefix")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        count, problems, note = verify(storage.normalize(args.shards))
    except ShardError as e:
        return cli.fail(p, e)
    for line in problems:
        print(line)
    print(f"{p.prog}: {count} samples checked, {len(problems)} problems" + (f" ({note})" if note else ""),
          file=sys.stderr)
    return cli.EXIT_FAILED if problems else 0
