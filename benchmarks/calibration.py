"""A fixed CPU workload that measures how fast this machine is, independent of chromaforge's code.

Every benchmark run times it beside the real cases; the regression gate divides each case's median
by its median, so a slower CI runner does not look like a regression and a faster one does not hide
one. It mixes what the hot path does: a compute-bound float32 matrix product (like the
generator's convolutions) and memory-bound float32 elementwise passes with a uint8 cast (like
the full-resolution post-processing). Keep it unchanged: editing it invalidates the baseline.
"""

from __future__ import annotations

import numpy as np

_RNG = np.random.default_rng(1234)
_A = _RNG.standard_normal((384, 384), dtype=np.float32)
_B = _RNG.standard_normal((384, 384), dtype=np.float32)
_X = _RNG.random(1 << 21, dtype=np.float32)  # 2 M pixels, 8 MB: bigger than L2
_OUT = np.empty(_X.shape, np.uint8)


def workload() -> float:
    """About 9 ms on the 2-core development VM. Returns a checksum so nothing is optimised away."""
    acc = 0.0
    for _ in range(4):
        acc += float((_A @ _B)[0, 0])
    y = _X * np.float32(200.0)
    for _ in range(4):
        y += np.float32(0.5)
        np.minimum(y, np.float32(255.0), out=y)
    _OUT[:] = y
    return acc + float(_OUT[0])
