"""Peak memory of the largest calls (opt-in: ``python -m pytest benchmarks -m memory``).

Each case runs in a fresh subprocess (``peak_memory.py``) and allocates GBs (20000² inputs, a
list of 1,000 512² images), so it is left out of the default and CI benchmark runs. The bound is
on what a call needs beyond its inputs and its output: the full-resolution steps work in row
tiles and lists in chunks, so it does not grow with the image's height or the list's length.
"""

from __future__ import annotations

import sys

import pytest

import peak_memory

BOUND_MB = {"colorize-20000": 256, "stylize-20000": 256, "fuse-20000": 384, "list-1000x512": 256}
"""Measured 84, 72, 192 and 110 MB (benchmarks/README.md); fuse's tiles grow with the width."""


@pytest.mark.memory
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak-RSS reset (/proc/self/clear_refs) is Linux only")
@pytest.mark.parametrize("case", list(peak_memory.CASES))
def test_peak_memory(benchmark, case):
    result = {}
    benchmark.pedantic(lambda: result.update(peak_memory.measure(case)), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["extra_mb"] < BOUND_MB[case], result
