"""What a clip is, free of any I/O or framework: the clip spec (`spec`), the frame-choice rules
(`sampling`), the crop geometry (`geometry`), the keyframe cut (`cut`), the one CPU resize
(`resample`), and a sample's plan (`plan`), which puts them together.

A sample's plan is the one place that turns a spec and a frame count into frame indices, a cut
and a crop box; both loaders (and the DALI graphs in ``pipelines/``, through the loader's feed)
carry it out. Nothing here imports a loader, a model or ``pipelines``.
"""
