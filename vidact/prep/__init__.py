"""The shard maker's wing: what `tools/make_shards.py` (``vidact-shards``) runs, apart from the trainer.

``make_shards``  the command: plan, encode in killable workers or Ray tasks, pack the results in order
``writing``      writing a shard set: shards, indexes, checksums, rejects and manifest; resume; object stores
``discovery``    the sources of a dataset: layouts, labels, splits, rejected and ignored entries
``probe``        which files are videos, by content (FFmpeg), in a killable worker
``ids``          clip ids and WebDataset keys that identify, segment ids and keys
``workers``      jobs in killable child processes: a time limit, crashes contained, results in order
                 (`in_job_order`: the ordered, windowed job loop of both pools)
``ray_pool``     the same contract on a Ray cluster (``--distributor ray``)
``repacked``     what a run encoded and what it cost (frames/s, CPU per frame), its summary line
``verify``       ``vidact-shards verify SET``: every file against its checksum, every sample

Both sides read what stays at the top of `vidact`: the sample schema (`vidact.shards`, with
`source_id_of`), `vidact.storage`, `vidact.video_io` and `vidact.fidelity` (which `video_io`
uses). The training and inference side never imports this package (`tests/test_layout.py`).
"""
