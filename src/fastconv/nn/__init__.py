"""fastconv.nn: inference layers, models (graphs of layers, and Sequential),
saving and loading them, importers, and the conversion of a classifier into
a fully convolutional network.

Every layer maps a batch to a batch, ``layer(x, num_threads=None)`` (which
runs ``layer.forward``), and reports the shape it produces for an input
shape without the batch axis (``layer.output_shape(shape)``). Conv2d and
Linear are fastconv.Conv2d and fastconv.Linear, which also take an output
array: ``layer(x, out=None, num_threads=None)``. Maps are NHWC by default; a
model (and each of its spatial layers) may be NCHW. Every layer takes
``name=``.

Graphs, in Keras's functional style: ``x = nn.Input((H, W, C))`` is a
symbolic tensor; a layer applied to symbolic tensors returns one (shapes are
checked as the graph is built); ``nn.Model(inputs, outputs)`` runs the graph
between them (several inputs and outputs, shared layers, models as layers).
Add, Multiply and Concatenate take a list. Sequential is a Model of layers
applied in turn.

The modules: layers (the layers with weights, activations and pools),
conv_transpose (ConvTranspose2d), activations (the activation layers),
resize (Upsample), normalization (BatchNorm2d, PReLU and fold_batchnorm),
structural (Add, Multiply, Concatenate, Identity, ZeroPad2d, Cropping2d),
symbolic (Input and symbolic tensors), model (Model, Sequential and
to_fully_convolutional), fcn (nn.fcn, the FCN-32s/16s/8s segmentation
networks), serialize (save and load), torch_import and
keras_import (the importers from_torch and from_keras), onnx_import (from_onnx)
tensor_ops (the generic tensor layers an imported ONNX graph uses), regions
(a region of a model's output computed exactly from the input window it
depends on) and tiled (predict_tiled: a model over an image of any size,
tile by tile on Dask).
"""
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax)
from fastconv.nn.activations import (Activation, Clip, HardSigmoid, HardSwish, LeakyReLU,
                                     ReLU6, SiLU, Sigmoid, Tanh)
from fastconv.nn.conv_transpose import ConvTranspose2d, bilinear_kernel
from fastconv.nn.structural import Add, Concatenate, Cropping2d, Identity, Multiply, ZeroPad2d
from fastconv.nn.symbolic import Input, SymbolicTensor
from fastconv.nn.normalization import BatchNorm2d, PReLU, fold_batchnorm
from fastconv.nn.resize import Upsample
from fastconv.nn.model import Model, Node, Sequential, to_fully_convolutional
from fastconv.nn.fcn import fcn, predict_labels
from fastconv.nn.serialize import load
from fastconv.nn.torch_import import from_torch
from fastconv.nn.keras_import import from_keras
from fastconv.nn import tensor_ops  # noqa: F401  (registers its layers with save/load)
from fastconv.nn.onnx_import import from_onnx
from fastconv.nn.tiled import predict_tiled

__all__ = ["Layer", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Flatten", "Softmax", "Dropout", "Add", "Multiply", "Concatenate", "Identity",
           "ZeroPad2d", "Cropping2d", "Input", "SymbolicTensor", "Model", "Node", "Sequential",
           "to_fully_convolutional", "load", "from_torch", "from_keras", "ConvTranspose2d",
           "bilinear_kernel", "Activation", "ReLU6", "Sigmoid", "Tanh", "SiLU", "HardSigmoid",
           "HardSwish", "LeakyReLU", "Clip", "Upsample", "BatchNorm2d", "PReLU",
           "fold_batchnorm", "fcn", "predict_labels", "from_onnx", "predict_tiled"]
