"""The layer shapes the benchmarks run: plain data, shared by
`python -m fastconv bench` and the pytest-benchmark cases in bench/.

Every network is at batch 1 with a 224x224 input. A convolution is listed once
per distinct shape, with `count` = how many times the network runs that shape
(the suite totals weigh each layer by it). `quick=True` marks the
representative subset that `bench --quick` runs.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Union


class Gemm(NamedTuple):
    """C (M x N) = A (M x K) @ B (K x N)."""
    name: str
    M: int
    K: int
    N: int
    count: int = 1
    quick: bool = False


class Conv(NamedTuple):
    """A square convolution on a square input: hw x hw x C -> K channels,
    k x k kernel, zero padding `pad` on every side; groups == C (with K == C)
    is a depthwise convolution."""
    name: str
    hw: int
    C: int
    K: int
    k: int
    stride: int = 1
    pad: int = 0
    groups: int = 1
    count: int = 1
    quick: bool = False


class Deconv(NamedTuple):
    """A square transposed convolution (upsampling) with TensorFlow's SAME
    rule: hw x hw x C -> out x out x K, k x k kernel, stride `stride`
    (conv2d_transpose with output_shape out, as fcn8_vgg.py's upscore
    layers)."""
    name: str
    hw: int
    C: int
    K: int
    k: int
    stride: int
    out: int
    count: int = 1
    quick: bool = False


Layer = Union[Gemm, Conv, Deconv]

# ResNet-50's 1x1 convolutions at batch 1 as GEMMs (pixels x C x K), and two
# square ones.
GEMM: List[Gemm] = [
    Gemm("layer1 64->256", 3136, 64, 256, quick=True),
    Gemm("layer1 256->64", 3136, 256, 64),
    Gemm("layer1 64->64", 3136, 64, 64),
    Gemm("layer2 512->128", 784, 512, 128),
    Gemm("layer2 128->512", 784, 128, 512),
    Gemm("layer3 1024->256", 196, 1024, 256, quick=True),
    Gemm("layer3 256->1024", 196, 256, 1024),
    Gemm("layer4 2048->512", 49, 2048, 512),
    Gemm("layer4 512->2048", 49, 512, 2048),
    Gemm("square 1024", 1024, 1024, 1024, quick=True),
    Gemm("square 2048", 2048, 2048, 2048),
]

# VGG16's 13 convolutions: 3x3, stride 1, padding 1.
VGG16: List[Conv] = [
    Conv("conv1_1", 224, 3, 64, 3, pad=1),
    Conv("conv1_2", 224, 64, 64, 3, pad=1),
    Conv("conv2_1", 112, 64, 128, 3, pad=1),
    Conv("conv2_2", 112, 128, 128, 3, pad=1),
    Conv("conv3_1", 56, 128, 256, 3, pad=1),
    Conv("conv3_2-3", 56, 256, 256, 3, pad=1, count=2, quick=True),
    Conv("conv4_1", 28, 256, 512, 3, pad=1),
    Conv("conv4_2-3", 28, 512, 512, 3, pad=1, count=2),
    Conv("conv5_1-3", 14, 512, 512, 3, pad=1, count=3, quick=True),
]

# torchvision's ResNet-50 (v1.5: the stride is on the 3x3 of each stage's
# first block). Names follow torchvision's modules; "*" = every block of the
# stage, "ds" = the first block's downsample (layer1's has the same shape as
# its conv3s and is counted with them).
RESNET50: List[Conv] = [
    Conv("conv1", 224, 3, 64, 7, stride=2, pad=3, quick=True),
    Conv("layer1.0.conv1", 56, 64, 64, 1),
    Conv("layer1.*.conv2", 56, 64, 64, 3, pad=1, count=3, quick=True),
    Conv("layer1.*.conv3+ds", 56, 64, 256, 1, count=4, quick=True),
    Conv("layer1.1-2.conv1", 56, 256, 64, 1, count=2),
    Conv("layer2.0.conv1", 56, 256, 128, 1),
    Conv("layer2.0.conv2", 56, 128, 128, 3, stride=2, pad=1, quick=True),
    Conv("layer2.*.conv3", 28, 128, 512, 1, count=4),
    Conv("layer2.0.ds", 56, 256, 512, 1, stride=2, quick=True),
    Conv("layer2.1-3.conv1", 28, 512, 128, 1, count=3),
    Conv("layer2.1-3.conv2", 28, 128, 128, 3, pad=1, count=3),
    Conv("layer3.0.conv1", 28, 512, 256, 1),
    Conv("layer3.0.conv2", 28, 256, 256, 3, stride=2, pad=1),
    Conv("layer3.*.conv3", 14, 256, 1024, 1, count=6),
    Conv("layer3.0.ds", 28, 512, 1024, 1, stride=2),
    Conv("layer3.1-5.conv1", 14, 1024, 256, 1, count=5),
    Conv("layer3.1-5.conv2", 14, 256, 256, 3, pad=1, count=5, quick=True),
    Conv("layer4.0.conv1", 14, 1024, 512, 1),
    Conv("layer4.0.conv2", 14, 512, 512, 3, stride=2, pad=1),
    Conv("layer4.*.conv3", 7, 512, 2048, 1, count=3),
    Conv("layer4.0.ds", 14, 1024, 2048, 1, stride=2),
    Conv("layer4.1-2.conv1", 7, 2048, 512, 1, count=2),
    Conv("layer4.1-2.conv2", 7, 512, 512, 3, pad=1, count=2),
]

# MobileNetV2's depthwise 3x3 convolutions (padding 1, channel multiplier 1),
# named after torchvision's `features` blocks.
MOBILENET_V2: List[Conv] = [
    Conv("features.1", 112, 32, 32, 3, pad=1, groups=32, quick=True),
    Conv("features.2", 112, 96, 96, 3, stride=2, pad=1, groups=96),
    Conv("features.3", 56, 144, 144, 3, pad=1, groups=144),
    Conv("features.4", 56, 144, 144, 3, stride=2, pad=1, groups=144, quick=True),
    Conv("features.5-6", 28, 192, 192, 3, pad=1, groups=192, count=2),
    Conv("features.7", 28, 192, 192, 3, stride=2, pad=1, groups=192),
    Conv("features.8-11", 14, 384, 384, 3, pad=1, groups=384, count=4),
    Conv("features.12-13", 14, 576, 576, 3, pad=1, groups=576, count=2, quick=True),
    Conv("features.14", 14, 576, 576, 3, stride=2, pad=1, groups=576),
    Conv("features.15-17", 7, 960, 960, 3, pad=1, groups=960, count=3),
]

# VGG16's classifier as convolutions (see fastconv.fc_to_conv): fc6 is a 7x7
# kernel over the whole 7x7x512 map, fc7 and fc8 are 1x1 on a 1x1 map
# (memory-bound at batch 1); then fc6 slid over larger maps, as in a fully
# convolutional VGG16 on larger images (compute-bound).
FC: List[Conv] = [
    Conv("fc6", 7, 512, 4096, 7),
    Conv("fc7", 1, 4096, 4096, 1, quick=True),
    Conv("fc8", 1, 4096, 1000, 1),
    Conv("fc6 on 14x14", 14, 512, 4096, 7),
    Conv("fc6/4 on 24x24", 24, 512, 1024, 7),
]

# The transposed convolutions of FCN-8s and FCN-32s on a 500x500 image
# (21 classes, the PASCAL VOC size the paper uses: the score map is pool5's
# 16x16, pool4's 32x32, pool3's 63x63), and a U-Net decoder's 2x2 stride-2
# upsampling.
UPSAMPLE: List[Deconv] = [
    Deconv("fcn8s upscore2", 16, 21, 21, 4, 2, 32),
    Deconv("fcn8s upscore4", 32, 21, 21, 4, 2, 63),
    Deconv("fcn8s upscore8", 63, 21, 21, 16, 8, 500, quick=True),
    Deconv("fcn32s upscore", 16, 21, 21, 64, 32, 500),
    Deconv("decoder 64->64", 80, 64, 64, 2, 2, 160, quick=True),
]

SUITES: Dict[str, List[Layer]] = {
    "gemm": GEMM,
    "vgg16": VGG16,
    "resnet50": RESNET50,
    "mobilenet_v2": MOBILENET_V2,
    "fc": FC,
    "upsample": UPSAMPLE,
}
