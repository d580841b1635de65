"""Peak resident memory of large calls, each in a fresh subprocess (Linux: /proc/self/status).

For each case the child builds its inputs, notes its resident memory (``VmRSS``), resets the
high-water mark (``/proc/self/clear_refs``), makes the call and reads the new high-water mark
(``VmHWM``). It reports the peak above the pre-call resident memory (which already holds the
inputs and the loaded model) next to the size of the output, so ``extra = peak_above - output``
is what the call needed beyond its result::

    OMP_NUM_THREADS=1 python benchmarks/peak_memory.py                  # every case (~20 GB free RAM, minutes)
    python benchmarks/peak_memory.py colorize-20000 list-1000x512       # some

``benchmarks/test_memory.py`` runs the same cases (opt-in: ``-m memory``) and asserts the bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASES = {
    "colorize-20000": "20000x20000 grey uint8 array -> colorize (RGB out)",
    "stylize-20000": "20000x20000 grey uint8 array -> stylize ukiyoe (RGB out)",
    "fuse-20000": "20000x20000 grey content + grey stylized -> fuse laplacian (RGB out)",
    "list-1000x512": "list of 1000 distinct 512x512 grey uint8 arrays -> colorize (1000 RGB arrays out)",
}

_CHILD = r"""
import json, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {repo!r})
import sdk

def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

case = {case!r}
pipe = sdk.load(max_pixels=None, threads={threads})
photo = Image.open(sdk.example_image()).convert("L")
if case == "list-1000x512":
    base = np.asarray(photo)
    inputs = [np.ascontiguousarray(np.roll(base, i, axis=1)) for i in range(1000)]
    call = lambda: pipe.colorize(inputs)
    in_bytes = sum(a.nbytes for a in inputs)
else:
    side = 20000
    grey = np.asarray(photo.resize((side, side), Image.BILINEAR))
    if case == "fuse-20000":
        other = np.ascontiguousarray(grey[::-1])
        call = lambda: pipe.fuse(grey, other, method="laplacian")
        in_bytes = grey.nbytes + other.nbytes
    elif case == "stylize-20000":
        call = lambda: pipe.stylize(grey, "ukiyoe")
        in_bytes = grey.nbytes
    else:
        call = lambda: pipe.colorize(grey)
        in_bytes = grey.nbytes
pipe.colorize(np.asarray(photo))  # warm-up: session arenas, thread pools
before = vm("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
import time
t0 = time.perf_counter()
out = call()
seconds = time.perf_counter() - t0
peak = vm("VmHWM")
out_bytes = sum(o.nbytes for o in out) if isinstance(out, list) else out.nbytes
print(json.dumps(dict(case=case, input_mb=in_bytes / 2**20, output_mb=out_bytes / 2**20, rss_before_mb=before / 2**20,
                      peak_mb=peak / 2**20, peak_above_mb=(peak - before) / 2**20,
                      extra_mb=(peak - before - out_bytes) / 2**20, seconds=seconds)))
"""


def measure(case: str, threads: int | None = None) -> dict:
    """Run one case in a fresh interpreter and return its figures (MB = 2**20 bytes)."""
    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}; expected one of {sorted(CASES)}")
    repo = str(Path(__file__).resolve().parents[1])
    code = _CHILD.format(repo=repo, case=case, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    cases = argv or list(CASES)
    print("| case | input MB | output MB | peak above pre-call RSS, MB | beyond the output, MB | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in cases:
        r = measure(case)
        print(f"| {CASES[case]} | {r['input_mb']:.0f} | {r['output_mb']:.0f} | {r['peak_above_mb']:.0f} | {r['extra_mb']:.0f} | {r['seconds']:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
