"""Time fastconv's side of every bench layer for the build installed in this
interpreter, to compare two builds (each in its own venv) run alternately:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/time_build.py gemm,vgg16 1,2 out.json

The calls are those of `python -m fastconv bench` (a fastconv.Conv2d built
once, or fastconv.matmul); out.json maps "suite|layer|threads" to the median
seconds per call (7 samples of at least 50 ms). torch is kept out of the
process, so that both builds run beside the same libraries.
"""
import json
import sys

sys.modules["torch"] = None

import numpy as np  # noqa: E402

import fastconv  # noqa: E402
from fastconv import _bench  # noqa: E402
from fastconv._shapes import SUITES, Gemm  # noqa: E402


def main() -> None:
    suites, out = sys.argv[1].split(","), sys.argv[3]
    threads = [int(t) for t in sys.argv[2].split(",")]
    rng = np.random.default_rng(0)
    medians = {}
    for suite in suites:
        for layer in SUITES[suite]:
            if isinstance(layer, Gemm):
                a = rng.standard_normal((layer.M, layer.K), dtype=np.float32)
                b = rng.standard_normal((layer.K, layer.N), dtype=np.float32)
                def call(nt, a=a, b=b):
                    return fastconv.matmul(a, b, num_threads=nt)
            else:
                x = rng.standard_normal((1, layer.hw, layer.hw, layer.C), dtype=np.float32)
                w = rng.standard_normal((layer.k, layer.k, layer.C // layer.groups, layer.K),
                                        dtype=np.float32)
                call = _bench.fastconv_call(layer, x, w)[0]
            for nt in threads:
                medians[f"{suite}|{layer.name}|{nt}"] = _bench.time_interleaved(
                    [lambda: call(nt)], 7, 0.05, settled=nt > 1)[0]
    with open(out, "w") as f:
        json.dump(medians, f, indent=1)


if __name__ == "__main__":
    main()
