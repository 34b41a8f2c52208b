"""Files that are either whole or absent: every artefact vidact writes (shards' indexes and
manifests, checkpoints, logs, reports, plots, synthetic datasets) goes through a temp file or
folder and ``os.replace``, so a killed process leaves the previous version, never half of a new one."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vidact.cli import UsageError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``<path>.tmp`` to write to; renamed over `path` when the block ends without error,
    removed otherwise. Parent folders are created. One writer per path (rank 0 in DDP)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A new temp folder beside `path` (``.<name>.tmp-*``) to fill; it replaces `path` (folder or
    file) when the block ends without error, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        umask_modes(tmp)  # mkdtemp makes 0o700
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Indented JSON; numpy/torch scalars are written as floats."""
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def atomic_write_csv(path: str | Path, rows: Sequence[dict] | Sequence[Sequence], columns: Sequence[str]) -> None:
    """A whole CSV: a header of `columns`, then dict rows (extra keys ignored) or plain rows."""
    buf = io.StringIO()
    if rows and not isinstance(rows[0], dict):
        writer = csv.writer(buf)
        writer.writerow(columns)
    else:
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV as dicts; a missing file has none."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_output(path: str | Path, kind: str = "folder") -> Path:
    """Before any work: `path` can be written as a `kind` ("folder", or "file": its folder), not
    under a file, its nearest existing folder taking a new entry (tried, then removed: a root
    process passes permission checks where the filesystem still says no, as in /proc). Raises
    `vidact.cli.UsageError` naming the place; creates nothing."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UsageError(f"{path}: a folder, not a file; name a file to write")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UsageError(f"{path}: {path} is a file, not a folder; choose another place")
    ancestor = path.parent if kind == "file" else path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{path}: {ancestor} is a file, not a folder; choose another place")
    try:
        Path(tempfile.mkdtemp(prefix=".vidact-probe-", dir=ancestor)).rmdir()
    except OSError as e:
        raise UsageError(f"{path}: {ancestor} takes no new files or folders ({e.strerror or e}); choose another "
                         "place") from None
    return path


def umask_modes(root: str | Path) -> None:
    """`root` and everything under it given the modes a plain create gives under the user's umask
    (files 0o666, folders 0o777, less the umask): a temp folder, or a library writing through a
    temp file, leaves 0o700 / 0o600 behind, which other accounts (a serving one) cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    root = Path(root)
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
