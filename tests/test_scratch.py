"""The kernels' temporary buffers (Winograd's transformed tiles, padded
copies of the input, per-thread workspaces; also a dense layer's partial
sums and the operator's copies of the input) live in per-thread scratch
memory kept from call to call (csrc/scratch.c): in steady state a layer
called with a preallocated output takes no page
faults, whatever the allocator's state. glibc with a fixed mmap threshold
(MALLOC_MMAP_THRESHOLD_) maps every large buffer afresh on each call: before
the scratch memory, these layers took 450-790 minor faults per call so."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import fastconv
    from fastconv import nn
    rng = np.random.default_rng(0)
    # (size, C, K, kernel, padding, the algorithm expected)
    cases = [(28, 128, 128, 3, 1, "winograd-f4x4-3x3"), (14, 512, 512, 3, 1, "winograd-f2x2-3x3"),
             (96, 3, 64, 3, 1, "igemm"), (28, 64, 64, 3, 1, "igemm")]
    for size, c, k, kk, pad, algorithm in cases:
        w = rng.standard_normal((kk, kk, c, k)).astype(np.float32)
        layer = nn.Conv2d(w, padding=pad)
        x = rng.standard_normal((1, size, size, c)).astype(np.float32)
        forced = "auto" if algorithm.startswith("winograd") else algorithm
        out = np.empty(layer(x).shape, np.float32)
        plan = layer._weights.plan(x.shape, layer.padding, layer.activation, forced)
        for _ in range(3):
            layer._weights.execute_algorithm(plan, x, out, fastconv.get_num_threads(), None)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            y, ran = layer._weights.execute_algorithm(plan, x, out, fastconv.get_num_threads(),
                                                      None)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
        assert ran == algorithm, (ran, algorithm)
        print(algorithm, size, c, k, faults)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mmap threshold")
def test_layers_take_no_page_faults_in_steady_state():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(fastconv.__file__)))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert len(rows) == 4, result.stdout
    for algorithm, size, c, k, faults in rows:
        # (a fault or two per call may come from Python itself; a buffer
        # mapped afresh costs one per 4 KiB page: hundreds here)
        assert float(faults) < 3, f"{algorithm} {size}x{size} {c}->{k}: {faults} faults per call"


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_a_cropped_transposed_call_into_the_dense_kernel(layout):
    # A stride-1 transposed convolution whose padding exceeds the kernel's
    # reach runs its direct convolution on a cropped copy of x; with a
    # one-pixel result that is the dense kernel, which builds its window
    # (in the NCHW layout's OIHW order) from that copy: two buffers of the
    # operator's held at once, each in its own scratch slot.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    w = rng.standard_normal((1, 1, 5, 4)).astype(np.float32)  # (kh, kw, out, in)
    expected = np.einsum("nc,kc->nk", x[:, 1, 1].astype(np.float64), w[0, 0].astype(np.float64))
    if layout == "NHWC":
        y = fastconv.conv_transpose2d(x, w, padding=1)[:, 0, 0]
    else:  # x (N, C, H, W), weights (in, out, kh, kw)
        y = fastconv.conv_transpose2d(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1),
                                      padding=1, layout="NCHW")[:, :, 0, 0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
