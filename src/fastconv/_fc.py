"""Fully-connected weights as convolution kernels."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from fastconv._validate import check_bias, check_ndim, float_arrays, layout_name, positive_int

__all__ = ["fc_to_conv"]


def fc_to_conv(weight, input_shape: Sequence[int], bias=None, *, weight_layout: str = "IO",
               flatten_order: str = "HWC", layout: str = "NHWC"
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Turn a fully-connected layer into an equivalent convolution kernel.

    A dense layer applied to a flattened (H, W, C) feature map is an H x W
    convolution over that map (no kernel flip). On exactly that map the
    convolution gives a 1x1 result equal to the dense layer; on a larger map
    it gives the dense layer at every stride-1 window. VGG's fc6 on a
    7x7x512 map becomes a 7x7 convolution; fc7 and fc8 (input_shape
    (1, 1, C)) become 1x1 convolutions.

    Parameters
    ----------
    weight : array_like, float32 or float64
        (H*W*C, K) for weight_layout "IO" (Keras/TensorFlow: y = flat @ W) or
        (K, H*W*C) for "OI" (PyTorch/Caffe: y = W @ flat).
    input_shape : (H, W, C)
        The feature map that was flattened.
    bias : array_like, shape (K,), optional
        Returned (as an array of the weight's dtype) unchanged in value.
    weight_layout : "IO" or "OI"
    flatten_order : str
        The order in which the map's axes were flattened: any permutation of
        "H", "W", "C" ("HWC" for a TensorFlow/Keras NHWC flatten, "CHW" for a
        PyTorch/Caffe NCHW flatten, "WHC" for models that permute first).
    layout : "NHWC" or "NCHW"
        The kernel is HWIO (kh=H, kw=W, C, K) for "NHWC", OIHW for "NCHW".

    Returns
    -------
    kernel : numpy.ndarray
        C-contiguous kernel for conv2d(..., layout=layout).
    bias : numpy.ndarray or None

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fmap = np.random.rand(7, 7, 8).astype(np.float32)
    >>> w = np.random.rand(7 * 7 * 8, 10).astype(np.float32)
    >>> k, _ = fastconv.fc_to_conv(w, (7, 7, 8))
    >>> np.allclose(fastconv.conv2d(fmap, k).ravel(), fmap.ravel() @ w, rtol=1e-4)
    True
    """
    fn = "fc_to_conv"
    dtype, arr = float_arrays(fn, weight=weight, bias=bias)
    w, b = arr["weight"], arr["bias"]
    check_ndim(fn, "weight", w, (2,), "2-D (in_features, out_features) for 'IO' or "
               "(out_features, in_features) for 'OI'")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"{fn}: input_shape must be (H, W, C); got {input_shape!r}")
    H, W, C = (positive_int(fn, "input_shape", n) for n in input_shape)
    if weight_layout not in ("IO", "OI"):
        raise ValueError(f"{fn}: weight_layout must be 'IO' (in, out) or 'OI' (out, in); "
                         f"got {weight_layout!r}")
    if not isinstance(flatten_order, str) or sorted(flatten_order.upper()) != ["C", "H", "W"]:
        raise ValueError(f"{fn}: flatten_order must be a permutation of 'H', 'W', 'C' "
                         f"such as 'HWC' or 'CHW'; got {flatten_order!r}")
    order = flatten_order.upper()
    layout = layout_name(fn, layout)
    features = H * W * C
    w_io = w if weight_layout == "IO" else w.T
    if w_io.shape[0] != features:
        which = "rows" if weight_layout == "IO" else "columns"
        raise ValueError(f"{fn}: weight has {w_io.shape[0]} input features ({which}) but "
                         f"input_shape {H}x{W}x{C} flattens to {features}")
    K = w_io.shape[1]
    check_bias(fn, b, K)
    # Unflatten the input axis in the order it was flattened, then move the
    # axes to the kernel's layout.
    sizes = {"H": H, "W": W, "C": C}
    unflat = w_io.reshape([sizes[a] for a in order] + [K])
    pos = {a: i for i, a in enumerate(order)}
    if layout == "NHWC":
        kernel = unflat.transpose(pos["H"], pos["W"], pos["C"], 3)
    else:
        kernel = unflat.transpose(3, pos["C"], pos["H"], pos["W"])
    kernel = np.ascontiguousarray(kernel, dtype=dtype)
    return kernel, (None if b is None else np.array(b, dtype=dtype))
