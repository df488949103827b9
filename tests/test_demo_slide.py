"""`python -m fastconv demo slide`: the digits classifier over a zarr slide
on a LocalCluster, tile by tile, equal to the whole-image pass."""
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("dask")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

from fastconv import _demo_slide  # noqa: E402
from fastconv.__main__ import main  # noqa: E402


def test_small_slide_on_a_local_cluster(tmp_path):
    r = _demo_slide.run_demo(True, size=1024, directory=str(tmp_path))
    assert r["crop_equal"] and r["scores_equal"]
    assert r["accuracy"] >= _demo_slide.MIN_ACCURACY
    assert r["digits"] > 100 and r["found"] >= 0.6 * r["digits"]
    assert len(r["peak_rss_mib"]) == 2 and all(m > 0 for m in r["peak_rss_mib"])
    assert (tmp_path / "classes" / "prediction").exists()
    text = _demo_slide.format_report(r)
    assert "bitwise equal" in text and "Mpixel/s" in text


@pytest.mark.slow
def test_slide_larger_than_the_clusters_memory(capsys):
    # the demo as documented (a 1 GiB slide, 2 workers of 384 MiB): its exit
    # status says the tiled class map and scores equal the whole-image pass
    assert main(["demo", "slide"]) == 0
    out = capsys.readouterr().out
    assert "bitwise equal" in out and "32768 x 32768" in out


def test_too_small_a_slide_is_refused():
    with pytest.raises(ValueError, match="--size must be at least"):
        _demo_slide.run_demo(True, size=50)
