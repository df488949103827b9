"""Call one bench layer's fastconv side `reps` times after two warm-up
calls, for counting one call's instructions with callgrind:

    OMP_NUM_THREADS=1 valgrind --tool=callgrind python bench/callgrind_layer.py "fc:fc7" 0
    OMP_NUM_THREADS=1 valgrind --tool=callgrind python bench/callgrind_layer.py "fc:fc7" 10

(the difference of the two totals over 10 is one call's instructions).
"""
import sys

sys.modules["torch"] = None

import numpy as np  # noqa: E402

from fastconv import _bench  # noqa: E402
from fastconv._shapes import SUITES  # noqa: E402

suite, name = sys.argv[1].split(":")
reps = int(sys.argv[2])
layer = next(layer for layer in SUITES[suite] if layer.name == name)
call = _bench.contenders(layer, np.float32, np.random.default_rng(0))[0]["fastconv"]
for _ in range(2 + reps):
    call(1)
