"""What a clip is, free of any I/O or framework: the clip spec (`spec`), the frame-choice rules
(`sampling`) and the crop/resize geometry (`geometry`).

These are the pure modules the DALI graphs in ``pipelines/`` may import (with the shard
schema of `vidact.shards`); the graphs are their twins in DALI arithmetic, held to equality by
the tests. Nothing here imports a loader, a model or ``pipelines``.
"""
