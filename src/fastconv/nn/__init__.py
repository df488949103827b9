"""fastconv.nn: inference layers, Sequential models, and the conversion of a
classifier into a fully convolutional network.

Every layer maps a batch to a batch: ``layer(x, num_threads=None)``, and
reports the shape it produces for an input shape without the batch axis
(``layer.output_shape(shape)``), which Sequential.summary() prints. Maps are
NHWC by default; a model (and each of its spatial layers) may be NCHW.
Conv2d and Linear are fastconv.Conv2d and fastconv.Linear, which also take
an output array: ``layer(x, out=None, num_threads=None)``.

The modules: layers (the layers), resize (Upsample), normalization
(BatchNorm2d, PReLU and fold_batchnorm), model (Sequential and
to_fully_convolutional), serialize (Sequential.save and load), torch_import
and keras_import (the importers from_torch and from_keras).
"""
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax)
from fastconv.nn.normalization import BatchNorm2d, PReLU, fold_batchnorm
from fastconv.nn.resize import Upsample
from fastconv.nn.model import Sequential, to_fully_convolutional
from fastconv.nn.serialize import load
from fastconv.nn.torch_import import from_torch
from fastconv.nn.keras_import import from_keras

__all__ = ["Layer", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Flatten", "Softmax", "Dropout", "Upsample", "BatchNorm2d", "PReLU",
           "fold_batchnorm", "Sequential", "to_fully_convolutional", "load",
           "from_torch", "from_keras"]
