"""The throughput benchmark behind ``tools/bench.py``: loader only, end to end, breakdown.

``cli`` is the command line (its docstring is the manual), ``sources`` the shard sets of the
resolution sweep, ``timing`` the timed passes, ``measure`` the loader-only and breakdown rows,
``end_to_end`` the model trained by `vidact.engine.train_steps`, ``peers``/``ceiling``/``limits``
the peer loaders, the decode-only ceiling and the repacking break-even (``--peers``), ``stages``
the DALI train graph cut after each step (``--breakdown``), ``soak`` memory over many epochs
(``--soak``), ``machine`` what the figures were measured on, ``report`` the markdown tables and
the JSON report (its docstring is the schema). The benchmark uses vidact's public APIs only.
``distinct_frames`` is a separate before/after check of the DALI graphs at two git revisions
(``python -m vidact.bench.distinct_frames``); ``RESULTS.md`` beside this file holds the figures.
"""

from pathlib import Path

# The checkout the benchmark runs from: tools/make_shards.py, the bench/.work cache, git.
REPO = Path(__file__).resolve().parents[2]
