"""What every vidact command shares: the name it was run by, one exit-status scheme, and the
flags several commands take, each flag name with one meaning:

    --workers        worker processes (make_shards' encoders; the reference loader's DataLoader
                     workers; predict --videos' decoders; the benchmark's reference and peer loaders)
    --dali-threads   DALI threads per process (the DALI loader's pipelines share them)
    --crop-size      the square crop a clip is made of, in pixels
    --model-size     the model's size preset

A test walks every console script's parser (`build_parser` in each command's module) and fails
on a flag without help.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
PROGRESS_EVERY_S = 60.0  # a progress line in the log this often where no bar shows

EXIT_FAILED = 1  # the work failed: nothing sharded, a benchmark row failed, a run stopped
EXIT_USAGE = 2  # bad input: a flag, path or file the command cannot use (argparse's own status)


class UsageError(Exception):
    """Bad input, said in one line (the message names the flag or file and what to do): the
    command prints it and exits with `EXIT_USAGE`."""


def prog(module: str) -> str:
    """The command as the user ran it: its console script (``vidact-train``), a ``tools/``
    script, or ``python -m MODULE``."""
    script = sys.argv[0] if sys.argv else ""
    name = os.path.basename(script)
    if name.startswith("vidact-"):
        return name
    if name.endswith(".py") and os.path.basename(os.path.dirname(os.path.abspath(script))) == "tools":
        return f"tools/{name}"
    return f"python -m {module}"


def parser(module: str, doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """A command's parser: named as it was run (`prog`), described by the first paragraph of its
    module's docstring `doc`."""
    return argparse.ArgumentParser(prog=prog(module), description=(doc or "").split("\n\n")[0], **kwargs)


def fail(command: argparse.ArgumentParser | str, error: Exception | str, status: int = EXIT_USAGE) -> int:
    """Says `error` in one line, after the command's name, on stderr; returns `status`."""
    name = command.prog if isinstance(command, argparse.ArgumentParser) else command
    print(f"{name}: {error}", file=sys.stderr)
    return status


def add_loader_flags(p: argparse.ArgumentParser, loaders: tuple[str, ...], default: str | None = "dali") -> None:
    """``--loader`` (one of `loaders`), ``--workers`` and ``--dali-threads``: which loader and how
    many of its workers."""
    p.add_argument("--loader", choices=loaders, default=default,
                   help="dali (decodes and augments in DALI: NVDEC on a GPU, DALI's CPU backend otherwise) or "
                        "torch (the reference: webdataset + PyAV in a DataLoader)"
                        + (f"; default {default}" if default else "; default: the recipe's"))
    p.add_argument("--workers", type=int, metavar="N",
                   help="--loader torch: DataLoader worker processes (default: one per core)")
    p.add_argument("--dali-threads", type=int, metavar="N",
                   help="--loader dali: DALI threads of this process (default: its share of the cores; on a GPU "
                        "at least the batch size)")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def said(*paths) -> None:
    """Each file or folder a command wrote, one ``-> PATH`` line each on stdout."""
    for path in paths:
        print(f"-> {path}")


def progress(items: Iterable[T], total: int, desc: str, unit: str, log: logging.Logger,
             extra: Callable[[], str] = str) -> Iterator[T]:
    """`items` with progress: tqdm's bar on a terminal; elsewhere (a job's log file) a line every
    `PROGRESS_EVERY_S`, ``desc: n/total unit, <extra()>, about T left``."""
    bar = tqdm(items, total=total, desc=desc, unit=unit, mininterval=1.0, disable=None)
    started = logged = time.perf_counter()
    for n, item in enumerate(bar, 1):
        yield item
        now = time.perf_counter()
        if bar.disable and now - logged >= PROGRESS_EVERY_S:
            logged = now
            left = (now - started) / n * (total - n)
            eta = f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min"
            said = extra()
            log.info("%s: %d/%d %s, %sabout %s left", desc, n, total, unit, f"{said}, " if said else "", eta)
