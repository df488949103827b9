"""The import of a torch.nn.Sequential (torch itself is imported only when
from_torch is called: the caller has a torch module, so torch is installed)."""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from fastconv._validate import layout_name
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax)
from fastconv.nn.model import Sequential

__all__ = ["from_torch"]


def from_torch(module: Any, layout: str = "NHWC") -> Sequential:
    """A fastconv.nn.Sequential computing what a torch.nn.Sequential computes.

    Supported layers: Conv2d (zero padding), Linear, ReLU, MaxPool2d
    (dilation 1), AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout and
    Softmax over the features. OIHW kernels become HWIO for layout "NHWC";
    torch's Flatten of an NCHW map becomes Flatten(order="CHW"), so the
    Linear weights after it keep their meaning in either layout.

    Parameters
    ----------
    module : torch.nn.Sequential
    layout : "NHWC" or "NCHW"
        The layout of the returned model's inputs and maps.

    Raises
    ------
    ImportError
        torch is not installed.
    ValueError
        A layer (named with its index) that has no fastconv equivalent.
    """
    import torch  # the caller has a torch module, so torch is installed

    fn = "from_torch"
    layout = layout_name(fn, layout)
    tnn = torch.nn
    if not isinstance(module, tnn.Sequential):
        raise TypeError(f"{fn}: module must be a torch.nn.Sequential; got {type(module).__name__}")

    def array(t: Any) -> Optional[np.ndarray]:
        return None if t is None else t.detach().cpu().numpy().copy()

    layers: List[Layer] = []
    after_global_pool = False
    for i, m in enumerate(module):
        def refuse(why: str) -> None:
            raise ValueError(f"{fn}: layer {i} ({m!r}) {why}")

        if isinstance(m, tnn.Conv2d):
            if m.padding_mode != "zeros":
                refuse(f"pads with {m.padding_mode!r}; only zero padding is supported")
            w = array(m.weight)
            layers.append(Conv2d(w if layout == "NCHW" else w.transpose(2, 3, 1, 0),
                                 array(m.bias), stride=tuple(m.stride),
                                 padding=m.padding if isinstance(m.padding, str)
                                 else tuple(m.padding),
                                 dilation=tuple(m.dilation), groups=m.groups, layout=layout))
        elif isinstance(m, tnn.Linear):
            layers.append(Linear(array(m.weight), array(m.bias), weight_layout="OI"))
        elif isinstance(m, tnn.ReLU):
            layers.append(ReLU())
        elif isinstance(m, tnn.MaxPool2d):
            if m.dilation not in (1, (1, 1)) or m.return_indices:
                refuse("uses dilation or return_indices, which MaxPool2d does not support")
            layers.append(MaxPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, layout))
        elif isinstance(m, tnn.AvgPool2d):
            if m.divisor_override is not None:
                refuse("sets divisor_override, which AvgPool2d does not support")
            layers.append(AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                    m.count_include_pad, layout))
        elif isinstance(m, tnn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                refuse("pools to a size other than 1x1")
            layers.append(GlobalAvgPool2d(layout))
            after_global_pool = True
            continue
        elif isinstance(m, tnn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                refuse("flattens other axes than all but the batch")
            if not after_global_pool:  # a global pool's (N, C) is already flat
                layers.append(Flatten("CHW", layout=layout))
        elif isinstance(m, tnn.Dropout):
            layers.append(Dropout(m.p))
        elif isinstance(m, tnn.Softmax):
            if m.dim not in (1, -1):
                refuse("acts on an axis other than the features")
            layers.append(Softmax(-1))
        else:
            refuse("has no fastconv.nn equivalent")
        after_global_pool = False
    return Sequential(*layers, layout=layout)
