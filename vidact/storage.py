"""Where bytes live: a local folder, or an object-store prefix such as ``s3://bucket/prefix``.

Locations are strings end to end (``pathlib.Path`` folds ``s3://b/p`` into ``s3:/b/p``). Local
ones are plain paths; remote ones go through fsspec (s3fs for ``s3://``, the ``s3`` extra), which
takes the endpoint, region and credentials from the standard AWS environment variables and config
files (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
or ``AWS_PROFILE``, ``~/.aws/config``): nothing here names an endpoint or a credential.

Every failure is an ``OSError`` whose message names the object: ``FileNotFoundError`` for a
missing one, a plain ``OSError`` for the rest (no credentials, endpoint unreachable, access
denied), so callers turn them into one-line errors without knowing the backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec

from vidact.files import atomic_write_bytes

S3_EXTRA = "pip install 'vidact[s3]' (s3fs)"

# botocore logs where it found credentials and the endpoint at INFO, our commands' level: noise on
# every run. A level the application set already is left alone.
for _name in ("botocore", "aiobotocore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URL with a scheme other than ``file://`` (``s3://...``)."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def normalize(location: str | os.PathLike) -> str:
    """`location` as a string without a trailing slash (``file://`` URLs as plain paths)."""
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return text.rstrip("/") or text


def join(location: str, name: str) -> str:
    """``location/name``: a URL for a remote location, a path for a local one."""
    return f"{location.rstrip('/')}/{name}" if is_remote(location) else os.path.join(location, name)


def basename(location: str) -> str:
    return normalize(location).rsplit("/", 1)[-1]


def canonical(location: str) -> str:
    """A remote location as it is, a local one as an absolute path (for cache keys)."""
    return normalize(location) if is_remote(location) else os.path.abspath(location)


def scheme(location: str) -> str:
    """``"local"`` or the URL scheme (``"s3"``)."""
    return location.split("://", 1)[0] if is_remote(location) else "local"


@contextlib.contextmanager
def _named(url: str) -> Iterator[None]:
    """Re-raises any failure while touching `url` as an OSError naming it (see module docstring)."""
    try:
        yield
    except FileNotFoundError as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        extra = f" ({detail})" if detail and "/" not in detail else ""  # e.g. "bucket does not exist"
        raise FileNotFoundError(f"{url}: not found{extra}") from e
    except ImportError as e:
        raise OSError(f"{url}: {e}; {S3_EXTRA}") from e
    except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors: name the object
        first = str(e).splitlines()[0] if str(e) else ""
        raise OSError(f"{url}: {e.__class__.__name__}: {first}") from e


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


def read_bytes(url: str) -> bytes:
    if not is_remote(url):
        with _named(url), open(url, "rb") as f:
            return f.read()
    with _named(url):
        fs, path = _fs(url)
        return fs.cat_file(path)


def read_many(urls: list[str]) -> list[bytes]:
    """The bytes of every url of `urls`, in order; remote ones fetched concurrently (fsspec's
    async batches: thousands of small objects in a few round trips' time, not one after another)."""
    remote = [u for u in urls if is_remote(u)]
    got = {}
    if remote:
        with _named(remote[0]):
            fs, _ = _fs(remote[0])
            paths = [fs._strip_protocol(u) for u in remote]
            found = fs.cat(paths, on_error="return")
        for url, path in zip(remote, paths):
            data = found.get(path, FileNotFoundError(path))
            if isinstance(data, BaseException):
                with _named(url):
                    raise data
            got[url] = data
    return [got[u] if u in got else read_bytes(u) for u in urls]


def read_text(url: str) -> str:
    return read_bytes(url).decode()


def read_ranges(url: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes at every ``(offset, size)`` of `url` (remote: fetched concurrently)."""
    with _named(url):
        if not is_remote(url):
            with open(url, "rb") as f:
                out = []
                for offset, size in ranges:
                    f.seek(offset)
                    out.append(f.read(size))
                return out
        if not ranges:
            return []
        fs, path = _fs(url)
        return fs.cat_ranges([path] * len(ranges), [o for o, _ in ranges], [o + s for o, s in ranges])


def open_read(url: str) -> IO[bytes]:
    """A seekable binary file object of `url` (remote: read in blocks as it is consumed)."""
    with _named(url):
        if not is_remote(url):
            return open(url, "rb")
        fs, path = _fs(url)
        return fs.open(path, "rb")


def listing(location: str) -> dict[str, int]:
    """{name: size} of the files directly under `location` (fresh, not cached); a location that
    does not exist yet has none."""
    if not is_remote(location):
        if not os.path.isdir(location):
            return {}
        with _named(location):
            return {e.name: e.stat().st_size for e in os.scandir(location) if e.is_file()}
    with _named(location):
        fs, path = _fs(location)
        try:
            entries = fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in entries if e.get("type") == "file"}


def write_bytes(url: str, data: bytes) -> None:
    """Whole or absent: local files through a temp file and a rename, objects in one PUT."""
    if not is_remote(url):
        atomic_write_bytes(url, data)
        return
    with _named(url):
        fs, path = _fs(url)
        fs.pipe_file(path, data)


def upload(local: str | os.PathLike, url: str) -> None:
    """Copies the local file `local` to `url` (one object, visible only when complete)."""
    if not is_remote(url):
        shutil.copyfile(local, url)
        return
    with _named(url):
        fs, path = _fs(url)
        fs.put_file(os.fspath(local), path)


def make_location(location: str) -> None:
    """Creates a local folder (and its parents); for an object store, checks that the bucket is
    there (it needs no folders), so that a wrong name fails before any work is done."""
    if not is_remote(location):
        try:
            os.makedirs(location, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            path = Path(location)
            blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
            raise NotADirectoryError(f"{location}: {blocker} is a file, not a folder; choose another place") from e
        return
    with _named(location):
        fs, path = _fs(location)
        bucket = path.split("/", 1)[0]
        found = fs.exists(bucket)
    if not found:
        raise FileNotFoundError(f"{location}: bucket '{bucket}' not found (create it first)")
