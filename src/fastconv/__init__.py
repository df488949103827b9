"""fastconv: fast CPU convolutions for NumPy.

1x1 and n x n x k convolutions with OpenMP and SIMD kernels chosen at run
time for the CPU, a GEMM fast path for 1x1 layers, and the conversion of
fully-connected layers into equivalent convolutions.
"""
__version__ = "0.1.0"

from fastconv import _config as _config_module
from fastconv._config import (config, get_flush_denormals, get_num_threads, get_winograd,
                              set_flush_denormals, set_num_threads, set_winograd,
                              show_config)
from fastconv._conv import conv2d, matmul
from fastconv._prepared import clear_weight_cache, get_weight_cache, set_weight_cache
from fastconv._transpose import conv_transpose2d
from fastconv._fc import fc_to_conv
from fastconv.nn.layers import Conv2d, Linear

_config_module._select_initial_isa()

__all__ = ["conv2d", "conv_transpose2d", "matmul", "fc_to_conv", "Conv2d", "Linear", "config",
           "show_config", "get_num_threads", "set_num_threads", "get_flush_denormals",
           "set_flush_denormals", "get_winograd", "set_winograd", "get_weight_cache",
           "set_weight_cache", "clear_weight_cache", "__version__"]
