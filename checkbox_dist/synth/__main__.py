"""Time the generator: python -m checkbox_dist.synth [samples] prints the median and p90 of render_sample."""

import sys
import time

import numpy as np

from checkbox_dist.synth.generator import render_sample

rng, times = np.random.default_rng(0), []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 500):
    start = time.perf_counter()
    render_sample(rng)
    times.append(time.perf_counter() - start)
print(f"render_sample: median {np.median(times) * 1e3:.2f} ms, p90 {np.percentile(times, 90) * 1e3:.2f} ms, n={len(times)}")
