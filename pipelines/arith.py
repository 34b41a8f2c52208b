"""Per-sample arithmetic of DALI graphs: scalar casts, selects, slices and table lookups that
`pipelines.decoding` and `pipelines.clips` share (graphs have no branches and no indexing by
data, so these are built from DALI operators)."""

from __future__ import annotations

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types


def as_float(x):
    return fn.cast(x, dtype=types.FLOAT)


def select(cond, a, b):
    """``a`` where cond else ``b``, for per-sample scalars (graphs have no branches)."""
    c = as_float(cond)
    return c * a + (1.0 - c) * b


def as_int(x):
    return fn.cast(x, dtype=types.INT32)


def head(x, count):
    """The first `count` (a float node) entries of the 1-D `x`."""
    return fn.slice(x, as_int(count * 0.0), as_int(count), axes=[0])


def constant(array):
    return types.Constant(np.asarray(array, dtype=np.float32))


def gather(table, index):
    """``table[index]`` for 1-D per-sample tensors: `fn.sequence_rearrange` along the first axis
    of the table seen as a sequence of one-element frames."""
    column = fn.reshape(table, shape=[-1, 1], layout="FX")
    return fn.reshape(fn.sequence_rearrange(column, new_order=index), shape=[-1], layout="")
