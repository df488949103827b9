"""nn.predict_tiled: a fully convolutional model over an image larger than
memory, tile by tile on Dask, with the whole-image pass's result.

The output map is cut into tiles; each tile is computed from the input
window its outputs depend on (the receptive field's halo around it, derived
from the model's layers by nn.regions.RegionPlan), with zero padding only at
the image's true border, so the tiles put together are the whole-image pass
(bitwise: tests/test_tiled.py). A task runs a few tiles of one row in turn
(batching small tiles), so its memory is bounded by the tile size whatever
the image size. Optional dependencies: dask (the arrays and the threads
scheduler), distributed (clusters), zarr (stores), tifffile (TIFF files),
tqdm (the progress bar): ``pip install "fastconv[tiled]"``.
"""
from __future__ import annotations

import mmap
import os
import sys
import threading
import weakref
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fastconv._config import get_num_threads, resolve_threads
from fastconv._validate import _is_int
from fastconv.nn.model import Model
from fastconv.nn.regions import Region, RegionPlan

__all__ = ["predict_tiled", "cluster_config", "WORKER_ENVIRON"]

FN = "predict_tiled"
# A task runs tiles of one row until it has covered about this many output
# pixels (so that small tiles do not make one task each: a dask task costs
# about a millisecond of scheduling), no more, so that a cluster's workers
# get tasks enough to share.
TASK_PIXELS = 1 << 18


# glibc's allocator settings for dask.distributed workers that run fastconv:
# dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which stops
# glibc from raising its mmap threshold, so that every large array a layer
# makes is mapped anew and page-faulted in (tiles ran 1.5x slower here).
# Keeping up to 256 MiB per allocation on the heap, trimmed above 1 GiB,
# gives the tasks back their speed. cluster_config() sets them for workers
# started after it (LocalCluster and the like).
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 1 << 28, "MALLOC_TRIM_THRESHOLD_": 1 << 30}


def cluster_config() -> Dict[str, Any]:
    """The dask config for workers to run predict_tiled fast (WORKER_ENVIRON
    in their environment): ``with dask.config.set(nn.tiled.cluster_config()):``
    around the cluster's start."""
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{FN} needs {module}, which is not installed: pip install "
                          f"\"fastconv[tiled]\" (dask, distributed, zarr, tifffile, tqdm)"
                          ) from None


# -- the image -----------------------------------------------------------------
class _Source:
    """What a task reads its input windows from, picklable: an array (zarr,
    h5py, a memmap reopened from its file in each process) read by slicing.
    A 2-D image is one channel."""

    def __init__(self, array: Any, layout: str, opener: Optional[Tuple] = None) -> None:
        self.layout, self.opener = layout, opener
        self._array = None if opener is not None else array

    @property
    def array(self) -> Any:
        if self._array is None:
            kind, *args = self.opener  # type: ignore[misc]
            self._array = _OPENERS[kind](*args)
        return self._array

    def read(self, region: Region) -> np.ndarray:
        return np.asarray(_window(self.array, region, self.layout))

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        if self.opener is not None:
            state["_array"] = None  # (reopened where it is read)
        return state


def _window(array: Any, region: Region, layout: str) -> Any:
    """The region of an image (a NumPy-like or dask array) as the model's
    input map: (h, w, C) or (C, h, w); a 2-D image is one channel."""
    (r0, r1), (c0, c1) = region
    if len(array.shape) == 2:
        w = array[r0:r1, c0:c1]
        return w[:, :, None] if layout == "NHWC" else w[None]
    return array[r0:r1, c0:c1] if layout == "NHWC" else array[:, r0:r1, c0:c1]


def _open_memmap(filename: str, dtype: str, offset: int, shape: Tuple[int, ...],
                 order: str) -> np.ndarray:
    return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape,
                     order=order)


def _open_tiff(path: str, level: int) -> Any:
    tifffile, zarr = _need("tifffile"), _need("zarr")
    store = tifffile.imread(path, aszarr=True, level=level)
    found = zarr.open(store, mode="r")
    return found if hasattr(found, "shape") else found[str(level)]


def _open_zarr(path: str) -> Any:
    return _need("zarr").open_array(path, mode="r")


_OPENERS = {"memmap": _open_memmap, "tiff": _open_tiff, "zarr": _open_zarr}


def _image(image: Any, layout: str) -> Tuple[Any, Optional[_Source]]:
    """(the image as an array-like with shape and slicing, or a dask array;
    the _Source its tasks read, None for a dask array)."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if path.lower().endswith((".tif", ".tiff")):
            source = _Source(None, layout, ("tiff", path, 0))
        elif os.path.isdir(path):
            source = _Source(None, layout, ("zarr", path))
        else:
            raise ValueError(f"{FN}: image {path!r} is neither a .tif/.tiff file nor a zarr "
                             f"directory")
        return source.array, source
    if type(image).__module__.split(".")[0] == "dask":
        return image, None
    if isinstance(image, np.memmap) and isinstance(image.base, mmap.mmap) and image.filename:
        order = "F" if image.flags.f_contiguous and not image.flags.c_contiguous else "C"
        return image, _Source(image, layout, ("memmap", image.filename, image.dtype.str,
                                              image.offset, image.shape, order))
    if isinstance(image, (list, tuple)):
        image = np.asarray(image)
    if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
        raise TypeError(f"{FN}: image must be a NumPy array or memmap, a zarr or dask array, "
                        f"or the path of a TIFF file or zarr array; got {type(image).__name__}")
    return image, _Source(image, layout)


def _map_shape(fn: str, shape: Tuple[int, ...], layout: str) -> Tuple[int, ...]:
    """The model's input map shape for an image of `shape`."""
    if len(shape) == 2:
        return (shape[0], shape[1], 1) if layout == "NHWC" else (1, shape[0], shape[1])
    if len(shape) == 3:
        return tuple(int(d) for d in shape)
    dims = "(H, W, C)" if layout == "NHWC" else "(C, H, W)"
    raise ValueError(f"{fn}: image must be {dims} for this {layout} model, or (H, W) for one "
                     f"channel, without a batch axis; got shape {tuple(shape)}")


# -- the tasks ------------------------------------------------------------------
_plans: "weakref.WeakKeyDictionary[Model, Dict[tuple, RegionPlan]]" = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def _plan(model: Model, map_shape: Tuple[int, ...]) -> RegionPlan:
    """The RegionPlan of a model and input shape, made once per process."""
    with _plans_lock:
        kept = _plans.setdefault(model, {})
        plan = kept.get(map_shape)
        if plan is None:
            plan = kept[map_shape] = RegionPlan(model, map_shape, FN)
        return plan


def _block(model: Model, map_shape: Tuple[int, ...], tiles: List[Region], inputs: Any,
           nthreads: int, postprocess: Any = None, sink: Optional["_Sink"] = None,
           index: Tuple[int, int] = (0, 0)) -> Optional[np.ndarray]:
    """One task: the tiles (of one row of tiles, left to right), each from
    its window (inputs: a list of arrays, one per tile, or a _Source),
    side by side, through postprocess; written to `sink` (then marked done
    there) if given."""
    plan = _plan(model, map_shape)
    parts = []
    for k, region in enumerate(tiles):
        x = inputs[k] if isinstance(inputs, list) else inputs.read(plan.input_region(region))
        parts.append(plan.run(x, region, nthreads))
    y = np.concatenate(parts, axis=1 if plan.layout == "NHWC" else 2)
    if postprocess is not None:
        y = _postprocessed(postprocess, y, plan.layout)
    if sink is None:
        return y
    sink.write(((tiles[0][0]), (tiles[0][1][0], tiles[-1][1][1])), y, index)
    return None


def _postprocessed(postprocess: Any, y: np.ndarray, layout: str) -> np.ndarray:
    """postprocess(y), checked to keep y's height and width where the layout
    puts them (first for NHWC, last for NCHW)."""
    hw = y.shape[:2] if layout == "NHWC" else y.shape[1:]
    r = np.asarray(postprocess(y))
    got = r.shape[:2] if layout == "NHWC" else r.shape[-2:]
    if r.ndim < 2 or got != hw:
        where = "first" if layout == "NHWC" else "last"
        raise ValueError(f"{FN}: postprocess must keep each tile's height and width as its "
                         f"{where} two axes ({hw}); it made shape {r.shape} of a tile of "
                         f"shape {y.shape}")
    return r


def _result(plan: RegionPlan, postprocess: Any) -> Tuple[Any, np.dtype, int]:
    """(the result's shape for an output map of h x w, as a function; its
    dtype; its height axis): the model's output, or what postprocess makes
    of it (found by running it on a 2 x 3 map of zeros)."""
    shape = plan.output_shape
    nhwc = plan.layout == "NHWC"
    k = shape[2] if nhwc else shape[0]
    if postprocess is None:
        if nhwc:
            return (lambda h, w: (h, w, k)), plan.dtype, 0
        return (lambda h, w: (k, h, w)), plan.dtype, 1
    probe = _postprocessed(postprocess, np.zeros((2, 3, k) if nhwc else (k, 2, 3), plan.dtype),
                           plan.layout)
    if nhwc:
        return (lambda h, w: (h, w) + probe.shape[2:]), probe.dtype, 0
    return (lambda h, w: probe.shape[:-2] + (h, w)), probe.dtype, probe.ndim - 2


# -- the output store -------------------------------------------------------------
class _Sink:
    """A zarr group's "prediction" array (chunked by tile) and "tiles_done"
    (one flag per task, each its own chunk): a task writes its tiles, then
    its flag, so a flag is set only over a whole written block; a task
    lost mid-write leaves its flag unset and is run again."""

    def __init__(self, prediction: Any, done: Any, hax: int) -> None:
        self.prediction, self.done, self.hax = prediction, done, hax

    def write(self, region: Region, y: np.ndarray, index: Tuple[int, int]) -> None:
        where = [slice(None)] * y.ndim
        where[self.hax], where[self.hax + 1] = (slice(*region[0]), slice(*region[1]))
        self.prediction[tuple(where)] = y
        self.done[index] = 1


def _sink(out: Any, shape: Tuple[int, ...], chunks: Tuple[int, ...], dtype: np.dtype,
          grid: Tuple[int, int], hax: int, signature: Dict[str, Any]) -> _Sink:
    """The _Sink in `out` (a path, a zarr group or store): made, or found
    from an earlier run of the same tiling (which is then resumed: its
    tasks marked done are not run again)."""
    zarr = _need("zarr")
    if isinstance(out, (str, os.PathLike)):
        group = zarr.open_group(os.fspath(out), mode="a")
    elif hasattr(out, "create_array") and hasattr(out, "attrs"):
        group = out
    else:
        try:
            group = zarr.open_group(out, mode="a")
        except Exception as exc:
            raise TypeError(f"{FN}: out must be a path, a zarr group or a zarr store; got "
                            f"{type(out).__name__} ({exc})") from None
    earlier = group.attrs.get("fastconv_predict_tiled")
    if earlier is not None and "prediction" in group and "tiles_done" in group:
        if earlier != signature:
            raise ValueError(f"{FN}: out already holds a tiled prediction of another model, "
                             f"image or tiling ({earlier}); give an empty store, or the same "
                             f"arguments to resume it")
        return _Sink(group["prediction"], group["tiles_done"], hax)
    prediction = group.create_array("prediction", shape=shape, chunks=chunks, dtype=dtype,
                                    fill_value=np.nan if dtype.kind == "f" else 0,
                                    overwrite=True)
    done = group.create_array("tiles_done", shape=grid, chunks=(1, 1), dtype="u1",
                              fill_value=0, overwrite=True)
    group.attrs["fastconv_predict_tiled"] = signature
    return _Sink(prediction, done, hax)


# -- scheduling -------------------------------------------------------------------
def _client(scheduler: Any) -> Any:
    """The dask.distributed client to run on, or None (a local scheduler)."""
    if scheduler is not None and not isinstance(scheduler, str):
        if type(scheduler).__name__ != "Client":
            raise TypeError(f"{FN}: scheduler must be None, a dask scheduler name ('threads', "
                            f"'sync', 'processes') or a dask.distributed Client; got "
                            f"{type(scheduler).__name__}")
        return scheduler
    if scheduler is None and "distributed" in sys.modules:
        try:
            return sys.modules["distributed"].get_client()
        except (ValueError, AttributeError):
            return None
    return None


def _progress(total: int, enabled: bool) -> Any:
    """A progress bar of `total` tasks (tqdm's, else a line on stderr)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=FN, unit="task")
    except ImportError:
        class Line:
            n = 0

            def update(self, k: int = 1) -> None:
                self.n += k
                print(f"\r{FN}: {self.n}/{total} tasks", end="", file=sys.stderr, flush=True)

            def close(self) -> None:
                print(file=sys.stderr)
        return Line()


def predict_tiled(model: Model, image: Any, *, tile: Any = 2048, scheduler: Any = None,
                  out: Any = None, progress: bool = True, num_threads: Optional[int] = None,
                  postprocess: Any = None) -> Any:
    """Run a fully convolutional model over an image of any size, tile by
    tile, exactly (the result is the whole-image pass's, ``model(image)``).

    Parameters
    ----------
    model : nn.Model or nn.Sequential
        One input and one output, every layer one that computes each output
        from a window of its input (convolutions with any padding, stride
        and dilation, transposed convolutions, pools with ceil_mode, Upsample,
        ZeroPad2d and Cropping2d, element-wise layers; models nested in it);
        a layer that reads the whole map (a global pool, a Linear over
        flattened maps) is refused with a ValueError naming it (convert a
        classifier with nn.to_fully_convolutional first).
    image : array or path
        (H, W, C) for an NHWC model, (C, H, W) for NCHW, or (H, W) for one
        channel, no batch axis: a NumPy array or memmap, a zarr array, a dask
        array, any array that slices like NumPy (h5py), or the path of a
        TIFF file (read through tifffile's zarr store, its full-resolution
        level) or of a zarr array. Any numeric dtype: each window is
        converted to the model's (uint8 slides are read as uint8).
    tile : int or (int, int)
        The tile's side in input pixels (default 2048). The output is cut in
        tiles of tile / (the model's input pixels per output pixel) output
        pixels; each reads its window with the halo the model needs.
    scheduler : None, "threads", "sync", "processes" or a distributed Client
        None: the active dask.distributed client if there is one, else dask's
        threads scheduler with fastconv.get_num_threads() workers. On a
        cluster the model is sent to every worker first; a worker lost
        mid-run has its tasks run again elsewhere (all workers lost at once
        lose the model, and the run fails).
    out : path, zarr group or zarr store, optional
        Write the result there instead of returning a dask array: the
        group's array "prediction" (chunked by tile; NaN where not yet
        written) and "tiles_done" (a flag per task, set after its tiles are
        written). Calling again with the same arguments resumes an
        interrupted run, skipping the tasks done.
    progress : bool
        With out, show a progress bar (tqdm's if installed).
    num_threads : int, optional
        fastconv's threads per task. By default 1 under a scheduler that
        runs tasks side by side (threads per task times tasks then never
        exceed a worker's cores), all of them under "sync".
    postprocess : callable, optional
        Applied to each tile's output map (in the model's layout, no batch
        axis) before it is returned or written, e.g. ``lambda s:
        s.argmax(-1).astype(np.uint8)`` for a class map: it must treat each
        pixel alone and keep the tile's height and width (first axes for
        NHWC, last for NCHW); the result's shape and dtype are found by
        running it on a 2 x 3 map of zeros.

    Returns
    -------
    dask.array.Array, or with out the zarr array written
        The output map in the model's layout, no batch axis, the model's
        dtype; lazy until computed (dask.diagnostics.ProgressBar shows its
        progress).

    Notes
    -----
    Exactness: each tile is computed by nn.regions.RegionPlan, which runs
    every layer over the region the tile needs, with the whole image's
    padding, pool divisors and resize indices, and each convolution by the
    algorithm the whole-image pass runs (Winograd over whole tiles of its
    map, aligned as in that pass). The result is bitwise the whole-image
    pass's for every tile size (tests/test_tiled.py), except where a kernel
    chooses its arithmetic by the data (a Winograd layer whose window holds
    Inf or NaN runs the direct convolution).

    Speed on dask.distributed: dask's nanny starts workers with an allocator
    setting that page-faults every large array in; start the cluster within
    ``dask.config.set(fastconv.nn.tiled.cluster_config())`` (see
    WORKER_ENVIRON).
    """
    if not isinstance(model, Model):
        raise TypeError(f"{FN}: model must be an nn.Model or nn.Sequential; got "
                        f"{type(model).__name__}")
    _need("dask")
    import dask
    import dask.array as da
    layout = model.layout
    array, source = _image(image, layout)
    map_shape = _map_shape(FN, tuple(array.shape), layout)
    plan = RegionPlan(model, map_shape, FN)
    if num_threads is not None:
        num_threads = resolve_threads(FN, num_threads)
    th, tw = _tile(tile)
    hax = 0 if layout == "NHWC" else 1
    H, W = map_shape[hax], map_shape[hax + 1]
    out_shape = plan.output_shape
    Ho, Wo = out_shape[hax], out_shape[hax + 1]
    # output tiles: `tile` input pixels, in output pixels
    oth = max(1, min(Ho, round(th * Ho / H)))
    otw = max(1, min(Wo, round(tw * Wo / W)))
    per_task = max(1, min(-(-Wo // otw), TASK_PIXELS // (oth * otw)))
    rows = [(r, min(r + oth, Ho)) for r in range(0, Ho, oth)]
    cols = [(c, min(c + otw, Wo)) for c in range(0, Wo, otw)]
    blocks = [[[(r, c) for c in cols[j:j + per_task]] for j in range(0, len(cols), per_task)]
              for r in rows]
    grid = (len(rows), len(blocks[0]))
    client = _client(scheduler)
    local = scheduler if isinstance(scheduler, str) else "threads"
    synchronous = client is None and local in ("sync", "synchronous", "single-threaded")
    nthreads = num_threads if num_threads is not None else (
        get_num_threads() if synchronous else 1)
    # The model reaches other processes once each: on a cluster, sent to every
    # worker up front (so that the scheduler does not keep the tasks on the
    # worker holding it); under "processes", as one key of the graph.
    if client is not None:
        model_key = client.scatter(model, broadcast=True, hash=False)
    elif local == "processes":
        model_key = dask.delayed(model, pure=False)
    else:
        model_key = model

    def inputs(tiles: List[Region]) -> Any:
        """The windows of a task's tiles: the source (read in the task), or
        for a dask image, its slices (computed by dask as the task's
        inputs), or for an in-memory array sent to other processes, its
        slices (only the windows travel)."""
        if source is None or (source.opener is None and isinstance(array, np.ndarray)
                              and (client is not None or local == "processes")):
            windows = [_window(array, plan.input_region(region), layout) for region in tiles]
            return windows if source is None else [np.ascontiguousarray(w) for w in windows]
        return source

    result_shape, dtype, rax = _result(plan, postprocess)
    if out is not None:
        signature = {"input_shape": list(map_shape), "output_shape": list(out_shape),
                     "tile": [th, tw], "dtype": np.dtype(dtype).name,
                     "result_shape": list(result_shape(Ho, Wo)),
                     "model_params": int(model.num_params), "grid": list(grid)}
        sink = _sink(out, result_shape(Ho, Wo), result_shape(oth, otw), np.dtype(dtype), grid,
                     rax, signature)
        todo = [(i, j) for i in range(grid[0]) for j in range(grid[1])
                if not sink.done[i, j]]
        tasks = [dask.delayed(_block, pure=False)(model_key, map_shape, blocks[i][j],
                                                  inputs(blocks[i][j]), nthreads, postprocess,
                                                  sink, (i, j))
                 for i, j in todo]
        _run(tasks, client, local, progress)
        return sink.prediction
    parts = []
    for row in blocks:
        row_parts = []
        for tiles in row:
            (r0, r1), c0, c1 = tiles[0][0], tiles[0][1][0], tiles[-1][1][1]
            task = dask.delayed(_block, pure=False)(model_key, map_shape, tiles,
                                                    inputs(tiles), nthreads, postprocess)
            row_parts.append(da.from_delayed(task, shape=result_shape(r1 - r0, c1 - c0),
                                             dtype=dtype))
        parts.append(da.concatenate(row_parts, axis=rax + 1))
    return da.concatenate(parts, axis=rax)


def _tile(tile: Any) -> Tuple[int, int]:
    if _is_int(tile) and int(tile) >= 1:
        return int(tile), int(tile)
    if isinstance(tile, (tuple, list)) and len(tile) == 2 and all(
            _is_int(t) and int(t) >= 1 for t in tile):
        return int(tile[0]), int(tile[1])
    raise ValueError(f"{FN}: tile must be an int >= 1 or a pair of them (the tile's side in "
                     f"input pixels); got {tile!r}")


def _run(tasks: List[Any], client: Any, local: str, progress: bool) -> None:
    """Compute the write tasks, with a progress bar."""
    bar = _progress(len(tasks), progress and bool(tasks))
    try:
        if client is not None:
            from distributed import as_completed
            for future in as_completed(client.compute(tasks), loop=client.loop):
                future.result()
                if bar is not None:
                    bar.update(1)
            return
        import dask
        from dask.callbacks import Callback

        class Bar(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if bar is not None and str(key).startswith("_block"):
                    bar.update(1)

        with Bar():
            dask.compute(*tasks, scheduler=local, num_workers=get_num_threads())
    finally:
        if bar is not None:
            bar.close()
