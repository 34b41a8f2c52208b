"""The throughput benchmark behind ``tools/bench.py``: loader only, end to end, breakdown.

``cli`` is the command line (its docstring is the manual), ``sources`` the shard sets of the
resolution sweep, ``timing`` the timed passes, ``measure`` the loader-only and breakdown rows,
``end_to_end`` the model trained by `vidact.engine.train_steps`, ``peers``/``ceiling``/``limits``
the peer loaders, the decode-only ceiling and the repacking break-even (``--peers``), ``stages``
the DALI train graph cut after each step (``--breakdown``), ``soak`` memory over many epochs
(``--soak``), ``machine`` what the figures were measured on, ``report`` the markdown tables and
the JSON report (its docstring is the schema). The benchmark uses vidact's public APIs only.
Measurements of their own, each a ``python -m`` command with a test: ``resume_cost`` (what a resume
reads), ``s3_start`` (a loader's start on many shards in object storage), ``repack`` (what
make_shards costs, beside ffmpeg), all three with ``local_s3``, the counting S3 server.
``RESULTS.md`` beside this file holds the figures. The benchmark runs from an installed package as
from a checkout: it re-encodes with ``python -m vidact.prep.make_shards`` and caches under
`cache_folder` (or ``--work``).
"""

import os
from pathlib import Path


def cache_folder() -> Path:
    """Where the benchmark keeps re-encoded shard sets and H.264 copies between runs: the user's
    cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``), ``vidact/bench``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidact" / "bench"
