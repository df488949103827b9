"""nn.predict_tiled on Dask: the tiled result equals the whole-image pass,
bitwise, for every kind of image (NumPy, memmap, zarr, dask, TIFF), into a
zarr store (resumed after an interruption), on a LocalCluster, and with a
worker killed mid-run. (The exactness of each tile against random networks
is tests/test_regions.py's.)"""
import os
import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import tiled

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")


def _weights(rng, *shape):
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)


def _fcn(seed=0, channels=1):
    """A small FCN: two stages of convolutions and pools (one with
    ceil_mode), a 1x1 score layer and a transposed convolution back up."""
    rng = np.random.default_rng(seed)
    x = nn.Input((None, None, channels))
    a = nn.Conv2d(_weights(rng, 3, 3, channels, 8), _weights(rng, 8), padding=1,
                  activation="relu")(x)
    b = nn.MaxPool2d(2)(a)
    c = nn.Conv2d(_weights(rng, 3, 3, 8, 16), padding=1, activation="relu")(b)
    d = nn.MaxPool2d(2, ceil_mode=True)(c)
    e = nn.Conv2d(_weights(rng, 1, 1, 16, 3))(d)
    return nn.Model(x, nn.ConvTranspose2d(_weights(rng, 8, 8, 3, 3), stride=4, padding=2)(e))


def _image(shape=(301, 257), seed=1):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _whole(model, image):
    x = image.astype(np.float32)
    return model((x[:, :, None] if x.ndim == 2 else x)[None])[0]


@pytest.mark.parametrize("tile", [1, 13, 64, (40, 100), 4096])
def test_numpy_image_tiled_equals_whole_pass(tile):
    model, image = _fcn(), _image()
    result = nn.predict_tiled(model, image, tile=tile)
    assert isinstance(result, da.Array)
    np.testing.assert_array_equal(result.compute(), _whole(model, image))


def test_memmap_zarr_dask_and_tiff_images(tmp_path):
    model, image = _fcn(), _image((190, 230))
    want = _whole(model, image)
    mm = np.memmap(tmp_path / "slide.raw", dtype=np.uint8, mode="w+", shape=image.shape)
    mm[:] = image
    mm.flush()
    ro = np.memmap(tmp_path / "slide.raw", dtype=np.uint8, mode="r", shape=image.shape)
    np.testing.assert_array_equal(nn.predict_tiled(model, ro, tile=50).compute(), want)
    np.testing.assert_array_equal(
        nn.predict_tiled(model, da.from_array(image, chunks=(37, 61)), tile=50).compute(), want)
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "slide.zarr"), mode="w", shape=image.shape,
                        chunks=(64, 64), dtype="u1")
    z[:] = image
    np.testing.assert_array_equal(nn.predict_tiled(model, z, tile=50).compute(), want)
    np.testing.assert_array_equal(
        nn.predict_tiled(model, str(tmp_path / "slide.zarr"), tile=50).compute(), want)
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "slide.tif", image, tile=(64, 64))
    np.testing.assert_array_equal(
        nn.predict_tiled(model, str(tmp_path / "slide.tif"), tile=50).compute(), want)


def test_nchw_model_and_a_colour_image():
    rng = np.random.default_rng(4)
    w = np.ascontiguousarray(_weights(rng, 3, 3, 3, 4).transpose(3, 2, 0, 1))
    model = nn.Sequential(nn.Conv2d(w, padding="same", stride=2, layout="NCHW"),
                          nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear", layout="NCHW"),
                          layout="NCHW")
    image = rng.standard_normal((3, 77, 91)).astype(np.float32)
    got = nn.predict_tiled(model, image, tile=20).compute()
    np.testing.assert_array_equal(got, model(image[None])[0])


def test_out_store_is_written_tile_by_tile_and_resumed(tmp_path):
    zarr = pytest.importorskip("zarr")
    model, image = _fcn(), _image((200, 150))
    want = _whole(model, image)
    path = str(tmp_path / "scores.zarr")
    written = nn.predict_tiled(model, image, tile=32, out=path, progress=False)
    np.testing.assert_array_equal(written[:], want)
    group = zarr.open_group(path, mode="a")
    done = group["tiles_done"]
    assert done[:].all() and done.shape[0] > 2
    # An interrupted run: two tasks' flags unset over garbage (a write cut
    # short). A second call runs those again, and only those.
    group["prediction"][:40] = -7.0
    done[0, :] = 0
    done[1, :] = 0
    ran = []
    original = tiled._block

    def counting(*args, **kwargs):
        ran.append(args[2][0][0])
        return original(*args, **kwargs)
    tiled._block = counting
    try:
        again = nn.predict_tiled(model, image, tile=32, out=path, progress=False)
    finally:
        tiled._block = original
    assert sorted({r for r in ran}) == [(0, 32), (32, 64)]
    np.testing.assert_array_equal(again[:], want)
    # a store holding another tiling is refused rather than mixed
    with pytest.raises(ValueError, match="another model, image or tiling"):
        nn.predict_tiled(model, image, tile=64, out=path, progress=False)


def test_threads_per_task_never_oversubscribe(monkeypatch):
    seen = []
    original = tiled._block

    def recording(model, shape, tiles, inputs, nthreads, *rest):
        seen.append(nthreads)
        return original(model, shape, tiles, inputs, nthreads, *rest)
    monkeypatch.setattr(tiled, "_block", recording)
    model, image = _fcn(), _image((64, 64))
    nn.predict_tiled(model, image, tile=16).compute()
    assert set(seen) == {1}  # (tasks run side by side: one thread each)
    seen.clear()
    nn.predict_tiled(model, image, tile=16, scheduler="sync").compute(scheduler="sync")
    import fastconv
    assert set(seen) == {fastconv.get_num_threads()}


def test_bad_arguments_are_refused():
    model = _fcn()
    with pytest.raises(TypeError, match="model must be an nn.Model"):
        nn.predict_tiled(object(), _image())
    with pytest.raises(ValueError, match="tile must be an int >= 1"):
        nn.predict_tiled(model, _image(), tile=0)
    with pytest.raises(ValueError, match=r"image must be \(H, W, C\)"):
        nn.predict_tiled(model, np.zeros((2, 3, 4, 1), np.float32))
    with pytest.raises(TypeError, match="image must be a NumPy array"):
        nn.predict_tiled(model, 3)
    with pytest.raises(ValueError, match="neither a .tif/.tiff file nor a zarr"):
        nn.predict_tiled(model, "no-such-file.png")
    with pytest.raises(ValueError, match="GlobalAvgPool2d.*averages the whole map"):
        nn.predict_tiled(nn.Sequential(nn.Conv2d(np.ones((3, 3, 1, 2), np.float32)),
                                       nn.GlobalAvgPool2d()), _image())


@pytest.fixture
def cluster():
    distributed = pytest.importorskip("distributed")
    with dask.config.set(tiled.cluster_config()), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, memory_limit="1GiB") as c:
        with distributed.Client(c) as client:
            yield c, client


def test_local_cluster(cluster, tmp_path):
    _, client = cluster
    # (the workers got the allocator settings cluster_config asks for)
    assert set(client.run(os.environ.get, "MALLOC_MMAP_THRESHOLD_").values()) == {
        str(tiled.WORKER_ENVIRON["MALLOC_MMAP_THRESHOLD_"])}
    model, image = _fcn(), _image((180, 170))
    want = _whole(model, image)
    # (the active client is found; the model reaches the workers pickled)
    np.testing.assert_array_equal(nn.predict_tiled(model, image, tile=40).compute(), want)
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape,
                        chunks=(50, 50), dtype="u1")
    z[:] = image
    out = nn.predict_tiled(model, z, tile=40, out=str(tmp_path / "out.zarr"),
                           scheduler=client, progress=False)
    np.testing.assert_array_equal(out[:], want)


def test_a_client_given_that_is_not_the_default(tmp_path):
    distributed = pytest.importorskip("distributed")
    model, image = _fcn(), _image((90, 80))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as c, \
            distributed.Client(c, set_as_default=False) as other:
        out = nn.predict_tiled(model, image, tile=30, out=str(tmp_path / "o.zarr"),
                               scheduler=other, progress=False)
    np.testing.assert_array_equal(out[:], _whole(model, image))


class KillOnce:
    """An image whose reader's process dies (os._exit) the first time a task
    reads the rows from `row` down: a worker lost in the middle of a run,
    after other tasks have written their tiles. A marker file makes it
    happen once, in whichever worker reads those rows first."""

    def __init__(self, array, row, marker):
        self.array, self.row, self.marker = array, row, marker
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        if key[0].start >= self.row:
            try:  # (O_EXCL: one worker only, though both read those rows at once)
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return self.array[key]


def test_a_worker_killed_mid_run_has_its_tiles_recomputed(cluster, tmp_path):
    zarr = pytest.importorskip("zarr")
    _, client = cluster
    model, image = _fcn(), _image((240, 200))
    want = _whole(model, image)
    path = str(tmp_path / "out.zarr")
    marker = str(tmp_path / "killed")
    out = nn.predict_tiled(model, KillOnce(image, 120, marker), tile=16, out=path,
                           scheduler=client, progress=False)
    assert os.path.exists(marker)  # (a worker did die)
    assert zarr.open_group(path, mode="r")["tiles_done"][:].all()
    np.testing.assert_array_equal(out[:], want)


def test_postprocess_per_tile(tmp_path):
    model, image = _fcn(), _image((150, 130))
    want = _whole(model, image)
    classes = nn.predict_tiled(model, image, tile=30,
                               postprocess=lambda s: s.argmax(-1).astype(np.uint8))
    assert classes.dtype == np.uint8 and classes.shape == want.shape[:2]
    np.testing.assert_array_equal(classes.compute(), want.argmax(-1))
    pytest.importorskip("zarr")
    stored = nn.predict_tiled(model, image, tile=30, out=str(tmp_path / "c.zarr"),
                              progress=False, postprocess=lambda s: s.max(-1, keepdims=True))
    np.testing.assert_array_equal(stored[:], want.max(-1, keepdims=True))
    with pytest.raises(ValueError, match="postprocess must keep each tile's height and width"):
        nn.predict_tiled(model, image, postprocess=lambda s: s.sum(0))
