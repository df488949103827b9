"""`python -m fastconv bench` machinery on tiny layers: tables, summary, JSON,
plot, arguments, and the NumPy baselines' numbers. No speed is asserted."""

import argparse
import contextlib
import io
import json
import re

import numpy as np
import pytest

import fastconv
from fastconv import _bench, _shapes
from fastconv.__main__ import main
from fastconv._shapes import Conv, Deconv, Gemm

TINY_SUITES = {
    "gemm": [Gemm("g", 16, 8, 12, quick=True)],
    "vgg16": [Conv("c3", 8, 4, 6, 3, pad=1, count=2, quick=True),
              Conv("not-quick", 8, 6, 6, 3, pad=1)],
    "resnet50": [Conv("c7s2", 12, 3, 8, 7, stride=2, pad=3, quick=True),
                 Conv("ds", 8, 4, 8, 1, stride=2, quick=True)],
    "mobilenet_v2": [Conv("dw", 9, 8, 8, 3, stride=2, pad=1, groups=8, quick=True)],
    "fc": [Conv("fc", 3, 4, 5, 3, quick=True)],
    "upsample": [Deconv("up", 5, 3, 4, 4, 2, 9, quick=True)],
}
JSON_KEYS = {"machine", "isa", "versions", "config", "blas", "openblas_env", "settings",
             "peak_gflops", "memory_bandwidth", "results", "summary", "fcn", "networks",
             "peers"}
RESULT_KEYS = {"suite", "layer", "shape", "count", "threads", "dtype", "flops",
               "algorithm", "executed_flops", "weight_bytes", "numpy_method", "seconds",
               "gflops", "gflops_executed", "weight_gbps", "pct_peak", "pct_bandwidth",
               "others_busy_pct", "speedup", "peer_best", "max_rel_err",
               "minor_faults_per_call", "unavailable"}
SUMMARY_KEYS = {"suite", "threads", "layers", "layers_in_suite", "flops", "executed_flops",
                "seconds", "gflops", "gflops_executed", "pct_peak", "speedup", "peer_best"}


@contextlib.contextmanager
def tiny_bench():
    """The bench on TINY_SUITES with the shortest timings and measurements."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_shapes, "SUITES", TINY_SUITES)
        mp.setattr(_bench, "TIMING", {True: (2, 0.0), False: (2, 0.0)})
        mp.setattr(_bench, "PROBE_SECONDS", 0.001)
        mp.setattr(_bench, "BANDWIDTH_BYTES", 1 << 20)
        yield mp


def run_bench(*argv):
    """main(["bench", *argv]) -> (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["bench", *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run over every tiny suite at 1 and 2 threads, with --json."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with tiny_bench():
        code, text = run_bench("--quick", "--threads", "1,2", "--json", str(path))
    with open(path) as f:
        return code, text, json.load(f)


def test_tables_and_summary_are_printed(quick_run):
    code, text, _ = quick_run
    assert code == 0
    for suite in TINY_SUITES:
        for nt, word in ((1, "thread"), (2, "threads")):
            assert f"{suite}, {nt} {word}, float32" in text
    assert "FMA-probe peak" in text and "memory read bandwidth" in text
    assert "summary" in text and "vs torch" in text and "%pk" in text
    assert "fastconv GB/s" in text  # the fc table's weight-streaming columns
    assert "c3 " in text and "not-quick" not in text  # --quick keeps the quick layers
    # the summary: layers run / in the suite, with multiplicity (c3 counts 2)
    assert re.search(r"^vgg16 +1 +2/3 ", text, re.MULTILINE)


def test_json_has_the_documented_keys(quick_run):
    _, _, report = quick_run
    assert set(report) == JSON_KEYS
    assert report["isa"] == fastconv.config()["isa"]
    assert set(report["peak_gflops"]) == {"1", "2"}
    assert set(report["memory_bandwidth"]["gbps"]) == {"1", "2"}
    assert report["settings"]["threads"] == [1, 2] and report["settings"]["quick"]
    results = report["results"]
    assert len(results) == 2 * 7  # seven quick layers, two thread counts
    for r in results:
        assert set(r) == RESULT_KEYS
        assert set(r["seconds"]) == set(_bench.CONTENDERS)
        assert r["seconds"]["fastconv"] > 0 and r["seconds"]["numpy"] > 0
    assert [r["numpy_method"] for r in results if r["threads"] == 1] == \
        ["matmul", "im2col", "im2col", "im2col", "taps", "im2col", "col2im"]
    summary = report["summary"]
    assert len(summary) == 2 * len(TINY_SUITES)
    for s in summary:
        assert set(s) == SUMMARY_KEYS
    for r in results:
        # float32 against the float64 reference, relative to the largest output
        assert 0 <= r["max_rel_err"]["fastconv"] < 1e-4
        assert 0 <= r["max_rel_err"]["numpy"] < 1e-4
        faults = r["minor_faults_per_call"]
        assert isinstance(faults, int) and faults >= 0
        assert r["unavailable"] == {} and r["peer_best"] is None
    assert report["settings"]["peers"] is False and report["peers"] == {}
    vgg = next(s for s in summary if s["suite"] == "vgg16")
    assert (vgg["layers"], vgg["layers_in_suite"]) == (2, 3)
    assert vgg["flops"] == 2 * _bench.flops(TINY_SUITES["vgg16"][0])


def test_openblas_env_is_reported(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    with tiny_bench():
        code, text = run_bench("--suite", "gemm", "--threads", "1")
    assert code == 0
    assert "WARNING: OPENBLAS_CORETYPE=Haswell" in text


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    with tiny_bench():
        code, _ = run_bench("--suite", "vgg16", "--threads", "1", "--plot", str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(monkeypatch, capsys):
    monkeypatch.setattr(_bench, "_pyplot", lambda: None)
    assert main(["bench", "--suite", "gemm", "--plot", "x.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--suite", "alexnet"], ["--threads", "0"],
                                  ["--threads", "1,x"], ["--dtype", "float16"]])
def test_bad_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_layer_geometry():
    layer = Conv("x", 9, 4, 6, 3, stride=2, pad=1)
    assert _bench.out_size(layer) == 5
    assert _bench.flops(layer) == 2 * 5 * 5 * 6 * 3 * 3 * 4
    assert _bench.weight_bytes(layer, np.dtype("float32")) == 3 * 3 * 4 * 6 * 4
    dw = Conv("dw", 8, 16, 16, 3, pad=1, groups=16)
    assert _bench.flops(dw) == 2 * 8 * 8 * 16 * 9
    assert _bench.flops(Gemm("g", 2, 3, 4)) == 2 * 2 * 3 * 4


@pytest.mark.parametrize("hw,C,K,k,stride,pad", [(9, 5, 7, 3, 1, 1), (11, 3, 8, 7, 2, 3),
                                                 (8, 6, 4, 1, 2, 0), (7, 4, 3, 7, 1, 0)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_im2col_baseline_equals_conv2d(hw, C, K, k, stride, pad, dtype):
    rng = np.random.default_rng(hw * K)
    x = rng.standard_normal((2, hw, hw, C)).astype(dtype)
    w = rng.standard_normal((k, k, C, K)).astype(dtype)
    expected = fastconv.conv2d(x, w, stride=stride, padding=pad)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(_bench.im2col_matmul(x, w, stride, pad), expected,
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_baseline_equals_conv2d(stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((1, 10, 10, 12)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 12)).astype(np.float32)
    expected = fastconv.conv2d(x, w, stride=stride, padding=1, groups=12)
    np.testing.assert_allclose(_bench.depthwise_taps(x, w, stride, 1), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [Deconv("odd", 5, 3, 4, 4, 2, 9),
                                   Deconv("even", 4, 3, 2, 16, 8, 32),
                                   Deconv("decoder", 6, 4, 4, 2, 2, 12)], ids=lambda la: la.name)
def test_every_contender_computes_the_same_transposed_convolution(layer):
    """fastconv, NumPy's col2im and torch (padding and a cut for TensorFlow's
    uneven SAME crop) give one result: the bench compares like with like."""
    calls, plan = _bench.contenders(
        layer, *_bench.layer_inputs(layer, np.dtype("float64"), np.random.default_rng(0)))
    assert plan.algorithm == "igemm"
    with _bench.thread_limits(1):
        outs = {name: np.asarray(call(1)) for name, call in calls.items()}
    expected = outs.pop("fastconv")
    assert expected.shape == (1, layer.out, layer.out, layer.K)
    for name, out in outs.items():
        if out.shape != expected.shape:  # torch's NCHW result
            out = out.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_every_contender_computes_the_same_layer():
    layer = Conv("c", 6, 4, 5, 3, stride=2, pad=1)
    calls, plan = _bench.contenders(
        layer, *_bench.layer_inputs(layer, np.dtype("float64"), np.random.default_rng(0)))
    assert plan == ("igemm", 3 * 3 * 5 * 9 * 4)  # (a 6x6 input, stride 2: 3x3 outputs)
    with _bench.thread_limits(1):
        outs = {name: np.asarray(call(1)) for name, call in calls.items()}
    expected = outs.pop("fastconv")
    for name, out in outs.items():
        if out.shape != expected.shape:  # torch's NCHW result
            out = out.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("layer", [Conv("c", 6, 4, 5, 3, stride=2, pad=1),
                                   Conv("dw", 9, 8, 8, 3, stride=2, pad=1, groups=8),
                                   Deconv("up", 5, 3, 4, 4, 2, 9)], ids=lambda la: la.name)
def test_function_contenders_compute_the_layer_with_the_functions(layer, monkeypatch):
    """--function: fastconv's contender is fastconv.conv2d / conv_transpose2d
    (not a layer), and computes what the layer contender does."""
    operands = _bench.layer_inputs(layer, np.dtype("float64"), np.random.default_rng(0))
    calls, plan = _bench.contenders(layer, *operands, function=True)
    layer_calls, layer_plan = _bench.contenders(layer, *operands)
    assert plan == layer_plan
    called = []
    for name in ("conv2d", "conv_transpose2d"):
        original = getattr(fastconv, name)
        monkeypatch.setattr(fastconv, name, lambda *a, _f=original, _n=name, **k:
                            called.append(_n) or _f(*a, **k))
    with _bench.thread_limits(1):
        for _ in range(3):  # (kept from the second call on)
            np.testing.assert_allclose(calls["fastconv"](1), layer_calls["fastconv"](1),
                                       rtol=1e-12, atol=1e-12)
    assert called == ["conv_transpose2d" if isinstance(layer, Deconv) else "conv2d"] * 3


def test_function_flag_is_reported(tmp_path):
    path = tmp_path / "bench.json"
    with tiny_bench():
        code, text = run_bench("--suite", "vgg16", "--quick", "--threads", "1", "--function",
                               "--json", str(path))
    assert code == 0
    assert "--function: fastconv = fastconv.conv2d / conv_transpose2d" in text
    with open(path) as f:
        report = json.load(f)
    assert report["settings"]["function"] is True
    assert [r["layer"] for r in report["results"]] == ["c3"]


def test_shape_tables():
    counts = {suite: sum(layer.count for layer in layers)
              for suite, layers in _shapes.SUITES.items()}
    assert counts == {"gemm": 11, "vgg16": 13, "resnet50": 53, "mobilenet_v2": 17, "fc": 5,
                      "upsample": 5}
    assert all(any(layer.quick for layer in layers) for layers in _shapes.SUITES.values())
    assert all(layer.groups == layer.C == layer.K for layer in _shapes.MOBILENET_V2)
    # fc6, fc7, fc8 on the maps they cover, then fc6 slid over 14x14 and 24x24
    assert [_bench.out_size(layer) for layer in _shapes.FC] == [1, 1, 1, 8, 18]


def test_without_torch_its_columns_show_a_dash(monkeypatch, tmp_path):
    monkeypatch.setattr(_bench, "_torch", lambda: None)
    path = tmp_path / "bench.json"
    with tiny_bench():
        code, text = run_bench("--suite", "fc", "--threads", "1", "--json", str(path))
    assert code == 0
    assert "torch - (not installed)" in text
    row = json.loads(path.read_text())["results"][0]
    assert row["seconds"]["torch"] is None and row["speedup"]["torch_best"] is None
    fc_line = next(line for line in text.splitlines() if line.startswith("fc "))
    assert " - " in fc_line


def test_others_busy():
    # 2 CPU-seconds busy out of 4 elapsed, 1 of them ours: others used 25%
    assert _bench.others_busy((10.0, 100.0, 5.0), (12.0, 104.0, 6.0)) == 25.0
    assert _bench.others_busy(None, (12.0, 104.0, 6.0)) is None
    snapshot = _bench.cpu_snapshot()
    assert snapshot is None or len(snapshot) == 3


def test_fcn_suite_rows_and_agreement_with_torch():
    """The whole-network suite on a VGG16 of 1/16 the width: one row per size
    and thread count, and (with torch) fastconv's output equals torch's."""
    rows = _bench.bench_fcn([1], np.dtype("float32"), np.random.default_rng(0), reps=1,
                            min_time=0.0, width=1 / 16)
    assert [r["layer"] for r in rows] == ["vgg16 fcn 224x224", "vgg16 fcn 384x384"]
    assert rows[1]["shape"] == "384x384x3 -> 6x6x1000"
    for r in rows:
        assert r["seconds"]["fastconv"] > 0
        if r["seconds"]["torch"] is not None:
            # The same network in float32 through 16 layers: relative to the
            # largest score, within float32 rounding of long sums.
            assert r["max_rel_diff_vs_torch"] < 1e-4
    _bench.print_table("fcn", rows, _bench.FCN_COLUMNS)


NETWORK_KEYS = {"suite", "network", "input", "output", "threads", "dtype", "macs", "reps",
                "onnx_exporter", "seconds", "torch_best", "gflops", "speedup",
                "max_rel_diff_vs_torch64", "unavailable", "others_busy_pct"}
TINY_NETWORKS = [_bench.NetworkSpec("resnet18", "resnet18", {"width": 4, "num_classes": 10},
                                    (3, 32, 32)),
                 _bench.NetworkSpec("unet", "unet", {"base": 4, "levels": 2}, (3, 16, 24))]


def test_networks_suite_on_tiny_networks(tmp_path):
    """--suite networks on two tiny networks: its tables, and JSON rows in
    which every contender either has a time and an output that agrees with
    torch float64's, or is unavailable with a reason."""
    pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    with tiny_bench() as mp:
        mp.setattr(_bench, "NETWORK_SUITE", TINY_NETWORKS)
        mp.setattr(_bench, "NETWORK_BUDGET", 0.0)
        mp.setattr(_bench, "NETWORK_REPS", (1, 1))
        code, text = run_bench("--suite", "networks", "--threads", "1", "--json", str(path))
    assert code == 0
    assert "networks: whole networks at batch 1, float32" in text
    assert re.search(r"^resnet18 +1 ", text, re.MULTILINE)
    report = json.loads(path.read_text())
    assert set(report) == JSON_KEYS and report["results"] == [] and report["fcn"] == []
    rows = report["networks"]
    assert [(r["network"], r["threads"]) for r in rows] == [("resnet18", 1), ("unet", 1)]
    assert [r["output"] for r in rows] == ["1x10", "1x2x16x24"]
    for r in rows:
        assert set(r) == NETWORK_KEYS
        assert set(r["seconds"]) == set(r["max_rel_diff_vs_torch64"]) == \
            set(_bench.NETWORK_CONTENDERS)
        assert r["macs"] > 0 and r["reps"] == 1
        assert r["seconds"]["torch"] > 0 and r["seconds"]["torch_cl"] > 0
        assert r["torch_best"] == min(r["seconds"]["torch"], r["seconds"]["torch_cl"])
        for c, t in r["seconds"].items():
            if t is None:
                assert r["unavailable"][c], c
                assert r["max_rel_diff_vs_torch64"][c] is None
            else:
                assert c not in r["unavailable"]
                # float32 against float64 through the network
                assert r["max_rel_diff_vs_torch64"][c] < 1e-4, c
        for variant, ratios in r["speedup"].items():
            t = r["seconds"][variant]
            expected = None if t is None else r["torch_best"] / t
            assert ratios["torch_best"] == expected
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    assert all(r["seconds"]["onnxruntime"] > 0 for r in rows)


def test_networks_suite_without_torch_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(_bench, "_torch", lambda: None)
    path = tmp_path / "bench.json"
    with tiny_bench():
        code, text = run_bench("--suite", "networks", "--threads", "1", "--json", str(path))
    assert code == 0
    assert "networks: skipped, torch is not installed" in text
    assert json.loads(path.read_text())["networks"] == []


def test_count_macs():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),
                                torch.nn.ConvTranspose2d(8, 2, 4, stride=2),
                                torch.nn.Flatten(), torch.nn.Linear(2 * 18 * 18, 5))
    x = torch.zeros(1, 3, 16, 16)
    assert _bench.count_macs(model, x) == (16 * 16 * 8 * 9 * 3 + 8 * 8 * 8 * 9 * 2
                                           + 8 * 8 * 8 * 16 * 2 + 5 * 2 * 18 * 18)


def test_outputs_are_compared_in_torchs_layout():
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(_bench._as_nchw(nhwc, nchw.shape, nhwc=True), nchw)
    np.testing.assert_array_equal(_bench._as_nchw([nchw], nchw.shape, nhwc=False), nchw)
    with pytest.raises(ValueError, match=r"output of shape \(2, 4, 5, 3\), expected"):
        _bench._as_nchw(nhwc, nchw.shape, nhwc=False)


def _installed_peers():
    """The peers whose modules import here (both need onnx to read the layer)."""
    found = []
    for module in _bench.PEERS:
        try:
            __import__("onnx")
            __import__(module)
        except ImportError:
            continue
        found.append(module)
    return found


def test_peers_on_the_quick_suites(tmp_path):
    """--peers on every tiny suite (a GEMM, convolutions, a depthwise one, a
    transposed one): each installed peer ran every layer with an output
    within PEER_TOLERANCE of the float64 reference, and its ratios and
    totals are in the JSON and the tables."""
    peers = _installed_peers()
    if not peers:
        pytest.skip("neither onnxruntime nor openvino is installed")
    path = tmp_path / "bench.json"
    with tiny_bench():
        code, text = run_bench("--quick", "--peers", "--threads", "1,2", "--json", str(path))
    assert code == 0
    report = json.loads(path.read_text())
    assert set(report) == JSON_KEYS and report["settings"]["peers"] is True
    assert set(report["peers"]) == set(_bench.PEERS)
    results = report["results"]
    assert len(results) == 2 * 7
    for r in results:
        assert set(r) == RESULT_KEYS
        assert set(r["seconds"]) == set(r["max_rel_err"]) == \
            set(_bench.CONTENDERS + _bench.PEERS)
        assert r["unavailable"] == {}, r["unavailable"]
        assert 0 <= r["max_rel_err"]["fastconv"] < 1e-4
        tf = r["seconds"]["fastconv"]
        for p in peers:
            assert r["seconds"][p] > 0
            assert 0 <= r["max_rel_err"][p] < _bench.PEER_TOLERANCE
            assert r["speedup"][p] == r["seconds"][p] / tf
        best = min(peers, key=lambda p: r["seconds"][p])
        assert r["peer_best"] == best and r["speedup"]["peer_best"] == r["seconds"][best] / tf
    for s in report["summary"]:
        assert set(s) == SUMMARY_KEYS
        rows = [r for r in results if (r["suite"], r["threads"]) == (s["suite"], s["threads"])]
        for p in peers:
            assert s["seconds"][p] == pytest.approx(
                sum(r["count"] * r["seconds"][p] for r in rows))
        assert s["peer_best"] in peers
    assert "fastconv vs each layer alone in the peers" in text
    for p in peers:
        assert f"{_bench.PEER_SHORT[p]} ms" in text
        assert f"peer {p}: " in text


def test_a_peer_with_a_wrong_result_is_not_timed(tmp_path):
    """A peer whose output disagrees with the reference is reported, not timed."""
    path = tmp_path / "bench.json"

    def wrong_peer(model, ov_model, ov_error, x, out_shape, nt):
        zeros = np.zeros(out_shape, np.float32)
        return {"onnxruntime": lambda nt: zeros}, {"openvino": "openvino is not installed"}

    with tiny_bench() as mp:
        mp.setattr(_bench, "peer_calls", wrong_peer)
        mp.setattr(_bench, "layer_onnx", lambda layer, x, w: b"")
        mp.setattr(_bench, "openvino_model", lambda model: (None, "openvino is not installed"))
        code, text = run_bench("--suite", "gemm", "--peers", "--threads", "1",
                               "--json", str(path))
    assert code == 0
    (row,) = json.loads(path.read_text())["results"]
    assert row["seconds"]["onnxruntime"] is None and row["seconds"]["openvino"] is None
    assert row["max_rel_err"]["onnxruntime"] == 1.0  # zeros: the whole output off
    assert row["unavailable"]["onnxruntime"].startswith("wrong result: max relative error")
    assert row["unavailable"]["openvino"] == "openvino is not installed"
    assert row["peer_best"] is None and row["speedup"]["peer_best"] is None
    assert "ort ms" not in text and "ov ms" not in text  # no peer ran: no columns
    assert "g onnxruntime: wrong result" in text


def test_peers_not_installed_are_named_in_the_header(monkeypatch):
    monkeypatch.setattr(_bench, "peer_versions", lambda: {p: None for p in _bench.PEERS})
    monkeypatch.setattr(_bench, "peer_calls", lambda *args: (
        {}, {p: f"{p} is not installed" for p in _bench.PEERS}))
    monkeypatch.setattr(_bench, "layer_onnx", lambda layer, x, w: b"")
    monkeypatch.setattr(_bench, "openvino_model", lambda model: (None, None))
    with tiny_bench():
        code, text = run_bench("--suite", "fc", "--peers", "--threads", "1")
    assert code == 0
    for p in _bench.PEERS:
        assert f"peer {p}: - not installed" in text
    assert "ort ms" not in text and "ov ms" not in text


@pytest.mark.parametrize("argv,message", [
    (["--suite", "networks"], "--peers times the per-layer suites, not 'networks'"),
    (["--suite", "fcn"], "--peers times the per-layer suites, not 'fcn'"),
    (["--dtype", "float64"], "--peers needs --dtype float32")])
def test_peers_arguments_are_checked_before_measuring(argv, message):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["bench", "--peers", *argv]) == 2
    assert message in err.getvalue()
    assert out.getvalue() == ""  # nothing measured, not even the header


@pytest.mark.parametrize("layer", [Gemm("g", 6, 5, 7), Conv("c", 7, 4, 6, 3, stride=2, pad=1),
                                   Conv("dw", 6, 8, 8, 3, pad=1, groups=8),
                                   Deconv("up", 5, 3, 4, 4, 2, 9)], ids=lambda la: la.name)
def test_layer_onnx_computes_the_layer(layer):
    """Each peer's one-node graph computes what the NumPy baseline does."""
    peers = _installed_peers()
    if not peers:
        pytest.skip("neither onnxruntime nor openvino is installed")
    x, w = _bench.layer_inputs(layer, np.dtype("float32"), np.random.default_rng(1))
    expected = _bench.numpy_baseline(layer, x.astype(np.float64), w.astype(np.float64))()
    if expected.ndim == 4:
        expected = expected.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    model = _bench.layer_onnx(layer, x, w)
    ov_model, ov_error = _bench.openvino_model(model)
    calls, missing = _bench.peer_calls(model, ov_model, ov_error, x, expected.shape, 1)
    assert set(calls) == set(peers), missing
    for name, call in calls.items():
        np.testing.assert_allclose(call(1), expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_cli_without_a_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "bench" in out and "demo" in out


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastconv {fastconv.__version__}"


def test_cli_help_describes_every_bench_option(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "the arrays' dtype" in out and "comma-separated suites" in out


def test_suite_takes_a_list_like_threads():
    assert _bench._suite_list("vgg16,resnet50") == ["vgg16", "resnet50"]
    assert _bench._suite_list("fc, fc") == ["fc"]
    with pytest.raises(argparse.ArgumentTypeError, match="expected suites among"):
        _bench._suite_list("vgg16,alexnet")


def test_plot_of_whole_network_suites_is_refused_before_measuring(monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(_bench, "measure_peak", lambda *a: pytest.fail("measured"))
    assert main(["bench", "--suite", "fcn", "--plot", "x.png"]) == 2
    assert "--plot draws the per-layer suites" in capsys.readouterr().err


def test_a_busy_machine_is_told_its_figures_mean_nothing(capsys):
    _bench._print_header(fastconv.config(), _bench.versions(), 45.0, {})
    assert "NOT meaningful" in capsys.readouterr().out
    _bench._print_header(fastconv.config(), _bench.versions(), 15.0, {})
    out = capsys.readouterr().out
    assert "noisy" in out and "NOT meaningful" not in out
