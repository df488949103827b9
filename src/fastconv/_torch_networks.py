"""Reference networks written in torch, equivalent to torchvision's (whose CPU
builds need not match the installed torch), for the tests and the bench's
"networks" suite: ResNet-18/50, MobileNetV2, VGG16, a U-Net and FCN-8s.

Each function returns an eval-mode torch.nn.Module with random weights drawn
from its `seed` (the global RNG is left as it was) and nothing downloaded.
The module and parameter names are torchvision's (and, for FCN-8s, those of
the fcn8s of Long et al. as ported by pytorch-fcn), so their state_dicts
look alike. BatchNorm layers get randomised statistics, so that an importer's
folding of them is exercised: their scales and shifts are drawn at random,
then their running means and variances are measured on a random batch in
training mode (which keeps the activations of order one through the depth). Every
network traces with torch.fx: no Python branch depends on a tensor.

torch is imported inside the functions: import this module only where torch
is installed.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

__all__ = ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "unet", "fcn8s", "NETWORKS"]

# The spatial size of the random batch that measures the BatchNorm statistics
# (small, so that building a network stays cheap; every network here keeps
# more than one value per channel at that size).
CALIBRATION_SIZE = 64


def _finish(model: Any, seed: int, in_channels: int = 3) -> Any:
    """Randomise the BatchNorm layers of `model` (see the module's docstring),
    from `seed`, and return it in eval mode."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            for bn in bns:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.2)
        if bns:
            momenta = [bn.momentum for bn in bns]
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # a cumulative average: this one batch's statistics
            model.train()
            with torch.no_grad():
                model(torch.randn(2, in_channels, CALIBRATION_SIZE, CALIBRATION_SIZE))
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
    return model.eval()


def _init_conv_linear(model: Any, linear_std: float = 0.01) -> None:
    """torchvision's initialisation (He-normal fan-out convolutions, normal
    linear layers), with small random biases instead of zeros so that the
    biases' path is exercised too."""
    import torch

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, linear_std)
        else:
            continue
        if m.bias is not None:
            torch.nn.init.uniform_(m.bias, -0.1, 0.1)


def _seeded(make: Any, seed: int) -> Any:
    """make()'s module with torchvision's initialisation (_init_conv_linear),
    both drawn from `seed` (the global RNG is left as it was)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        _init_conv_linear(model)
    return model


# --------------------------------------------------------------------------
# ResNet (torchvision.models.resnet: v1.5, the stride in the 3x3 convolution)
# --------------------------------------------------------------------------
def _resnet_classes():
    import torch
    from torch import nn

    def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

    def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin: int, planes: int, stride: int = 1,
                     downsample: Optional[nn.Module] = None):
            super().__init__()
            self.conv1 = conv3x3(cin, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:  # a module attribute, not data: fx traces it
                identity = self.downsample(x)
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, planes: int, stride: int = 1,
                     downsample: Optional[nn.Module] = None):
            super().__init__()
            self.conv1 = conv1x1(cin, planes)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes, stride)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = conv1x1(planes, planes * self.expansion)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, block: type, layers: Sequence[int], num_classes: int = 1000,
                     width: int = 64):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, width, layers[0])
            self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
            self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
            self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion,
                                                   stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.avgpool(x)
            return self.fc(torch.flatten(x, 1))

    return BasicBlock, Bottleneck, ResNet


def _resnet(bottleneck: bool, layers: Sequence[int], num_classes: int, width: int,
            seed: int) -> Any:
    basic, bottle, resnet = _resnet_classes()
    block = bottle if bottleneck else basic
    return _finish(_seeded(lambda: resnet(block, layers, num_classes, width), seed), seed)


def resnet18(num_classes: int = 1000, width: int = 64, seed: int = 0) -> Any:
    """torchvision's resnet18 (`width` = the first stage's channels, 64 in
    torchvision; smaller for quick tests)."""
    return _resnet(False, (2, 2, 2, 2), num_classes, width, seed)


def resnet50(num_classes: int = 1000, width: int = 64, seed: int = 0) -> Any:
    """torchvision's resnet50 (Bottleneck blocks 3, 4, 6, 3)."""
    return _resnet(True, (3, 4, 6, 3), num_classes, width, seed)


# --------------------------------------------------------------------------
# MobileNetV2 (torchvision.models.mobilenetv2)
# --------------------------------------------------------------------------
def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of `divisor`, never
    more than 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, seed: int = 0) -> Any:
    """torchvision's mobilenet_v2: Conv-BN-ReLU6 blocks (torchvision's
    Conv2dNormActivation is a Sequential of the three, as here), inverted
    residuals with a shortcut where the stride is 1 and the channels stay,
    global average pool, Dropout(0.2) and Linear."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                act: bool = True) -> List[nn.Module]:
        mods = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout)]
        return mods + [nn.ReLU6(inplace=True)] if act else mods

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
            super().__init__()
            hidden = int(round(cin * expand_ratio))
            self.use_res_connect = stride == 1 and cin == cout
            layers: List[nn.Module] = []
            if expand_ratio != 1:
                layers.append(nn.Sequential(*conv_bn(cin, hidden, 1)))
            layers += [nn.Sequential(*conv_bn(hidden, hidden, 3, stride, groups=hidden)),
                       *conv_bn(hidden, cout, 1, act=False)]
            self.conv = nn.Sequential(*layers)
            self.out_channels = cout

        def forward(self, x):
            if self.use_res_connect:  # fixed at construction: fx traces it
                return x + self.conv(x)
            return self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            cin = _make_divisible(32 * width_mult)
            self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
            features: List[nn.Module] = [nn.Sequential(*conv_bn(3, cin, 3, stride=2))]
            for t, c, n, s in settings:
                cout = _make_divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            features.append(nn.Sequential(*conv_bn(cin, self.last_channel, 1)))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(p=0.2),
                                            nn.Linear(self.last_channel, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return _finish(_seeded(MobileNetV2, seed), seed)


# --------------------------------------------------------------------------
# VGG16 (torchvision.models.vgg16: configuration "D", no BatchNorm)
# --------------------------------------------------------------------------
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


def _vgg_features(width: float) -> List[Any]:
    """VGG16's 13 convolutions (3x3, padding 1, ReLU) and 5 max pools, their
    channels scaled by `width`."""
    from torch import nn

    layers: List[nn.Module] = []
    cin = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            cout = max(1, int(v * width))
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
    return layers


def vgg16(num_classes: int = 1000, width: float = 1.0, fc_channels: int = 4096,
          seed: int = 0) -> Any:
    """torchvision's vgg16 for 224x224 inputs: features, AdaptiveAvgPool2d(7),
    flatten, Linear-ReLU-Dropout twice and Linear. `width` scales the
    convolutions' channels and fc_channels is the hidden layers' (1 and 4096 in
    torchvision)."""
    import torch
    from torch import nn

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*_vgg_features(width))
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            c = max(1, int(512 * width))
            self.classifier = nn.Sequential(
                nn.Linear(c * 7 * 7, fc_channels), nn.ReLU(True), nn.Dropout(),
                nn.Linear(fc_channels, fc_channels), nn.ReLU(True), nn.Dropout(),
                nn.Linear(fc_channels, num_classes))

        def forward(self, x):
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    return _finish(_seeded(VGG, seed), seed)


# --------------------------------------------------------------------------
# U-Net (Ronneberger et al. with padded convolutions and BatchNorm, as the
# common PyTorch ports have it)
# --------------------------------------------------------------------------
def unet(in_channels: int = 3, num_classes: int = 2, base: int = 64, levels: int = 4,
         seed: int = 0) -> Any:
    """A U-Net: `levels` down steps (max pool 2, then two 3x3 Conv-BN-ReLU)
    from `base` channels doubling to base * 2**levels, and as many up steps
    (ConvTranspose2d 2x2 stride 2 halving the channels, torch.cat with the
    skip of the same level, two Conv-BN-ReLU), then a 1x1 convolution to the
    classes. The input's height and width must be multiples of 2**levels
    (no cropping or padding: the skips match exactly)."""
    import torch
    from torch import nn

    def double_conv(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Up(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            self.conv = double_conv(cin // 2 + cout, cout)

        def forward(self, x, skip):
            return self.conv(torch.cat([skip, self.up(x)], dim=1))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [base * 2 ** i for i in range(levels + 1)]
            self.inc = double_conv(in_channels, chans[0])
            self.down = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2),
                                                    double_conv(chans[i], chans[i + 1]))
                                      for i in range(levels))
            self.up = nn.ModuleList(Up(chans[i + 1], chans[i])
                                    for i in reversed(range(levels)))
            self.outc = nn.Conv2d(chans[0], num_classes, kernel_size=1)

        def forward(self, x):
            skips = [self.inc(x)]
            for down in self.down:  # a loop over modules: fx unrolls it
                skips.append(down(skips[-1]))
            x = skips.pop()
            for up in self.up:
                x = up(x, skips.pop())
            return self.outc(x)

    return _finish(_seeded(UNet, seed), seed, in_channels)


# --------------------------------------------------------------------------
# FCN-8s (Long, Shelhamer and Darrell; the voc-fcn8s net of
# fcn.berkeleyvision.org as pytorch-fcn's FCN8s ports it)
# --------------------------------------------------------------------------
def _bilinear_weight(channels: int, k: int) -> Any:
    """The (channels, channels, k, k) weight of a transposed convolution that
    upsamples bilinearly each channel on its own (surgery.interp /
    get_upsampling_weight: the filter on the diagonal, zeros elsewhere)."""
    import torch

    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    w = torch.zeros(channels, channels, k, k, dtype=torch.float64)
    w[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return w.float()


def fcn8s(num_classes: int = 21, width: float = 1.0, fc_channels: int = 4096,
          seed: int = 0) -> Any:
    """FCN-8s: VGG16's convolutions with the first padded by 100, max pools
    with ceil_mode, fc6 as a 7x7 convolution and fc7 as 1x1 (ReLU, Dropout2d),
    score_fr, then upscore2 (4x4/2), + score_pool4 cropped at 5, upscore_pool4
    (4x4/2), + score_pool3 cropped at 9, upscore8 (16x16/8) cropped at 31 to
    the input's size. The upsampling transposed convolutions have no bias and
    bilinear weights (as the original initialises them); the score layers
    are random (the original zeroes them, which would make the output
    trivial). `width` scales the backbone's channels and fc_channels is
    fc6/fc7's (1 and 4096 in the original)."""
    import torch
    from torch import nn

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            ch = [max(1, int(v * width)) for v in (64, 128, 256, 512)]
            names = [("1", 2, ch[0]), ("2", 2, ch[1]), ("3", 3, ch[2]), ("4", 3, ch[3]),
                     ("5", 3, ch[3])]
            cin = 3
            for stage, n, cout in names:
                for i in range(1, n + 1):
                    pad = 100 if (stage, i) == ("1", 1) else 1
                    setattr(self, f"conv{stage}_{i}", nn.Conv2d(cin, cout, 3, padding=pad))
                    setattr(self, f"relu{stage}_{i}", nn.ReLU(inplace=True))
                    cin = cout
                setattr(self, f"pool{stage}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.stages = [(stage, n) for stage, n, _ in names]
            self.fc6 = nn.Conv2d(ch[3], fc_channels, 7)
            self.relu6 = nn.ReLU(inplace=True)
            self.drop6 = nn.Dropout2d()
            self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
            self.relu7 = nn.ReLU(inplace=True)
            self.drop7 = nn.Dropout2d()
            self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
            self.score_pool3 = nn.Conv2d(ch[2], num_classes, 1)
            self.score_pool4 = nn.Conv2d(ch[3], num_classes, 1)
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2,
                                               bias=False)
            self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8,
                                               bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2,
                                                    bias=False)

        def forward(self, x):
            h = x
            pools = {}
            for stage, n in self.stages:  # a fixed list: fx unrolls it
                for i in range(1, n + 1):
                    h = getattr(self, f"relu{stage}_{i}")(getattr(self, f"conv{stage}_{i}")(h))
                h = getattr(self, f"pool{stage}")(h)
                pools[stage] = h
            h = self.drop6(self.relu6(self.fc6(h)))
            h = self.drop7(self.relu7(self.fc7(h)))
            upscore2 = self.upscore2(self.score_fr(h))  # 1/16
            # The crops' offsets are the original's; their sizes come from the
            # other operand's shape, which fx records (size() calls, slices).
            h = self.score_pool4(pools["4"])
            h = h[:, :, 5:5 + upscore2.size()[2], 5:5 + upscore2.size()[3]]
            upscore_pool4 = self.upscore_pool4(upscore2 + h)  # 1/8
            h = self.score_pool3(pools["3"])
            h = h[:, :, 9:9 + upscore_pool4.size()[2], 9:9 + upscore_pool4.size()[3]]
            h = self.upscore8(upscore_pool4 + h)
            return h[:, :, 31:31 + x.size()[2], 31:31 + x.size()[3]].contiguous()

    model = _seeded(FCN8s, seed)
    with torch.no_grad():
        for up in (model.upscore2, model.upscore8, model.upscore_pool4):
            up.weight.copy_(_bilinear_weight(num_classes, up.kernel_size[0]))
    return _finish(model, seed)


# name -> (constructor, the input's (C, H, W) the network is meant for)
NETWORKS = {
    "resnet18": (resnet18, (3, 224, 224)),
    "resnet50": (resnet50, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "vgg16": (vgg16, (3, 224, 224)),
    "unet": (unet, (3, 224, 224)),
    "fcn8s": (fcn8s, (3, 224, 224)),
}

# name -> (a reduced-width build, the input's (C, H, W) for it): the same
# structure as NETWORKS', small enough for tests.
SMALL = {
    "resnet18": (lambda: resnet18(num_classes=10, width=8), (3, 64, 64)),
    "resnet50": (lambda: resnet50(num_classes=10, width=8), (3, 64, 64)),
    "mobilenet_v2": (lambda: mobilenet_v2(num_classes=10, width_mult=0.25), (3, 64, 64)),
    "vgg16": (lambda: vgg16(num_classes=10, width=1 / 16, fc_channels=32), (3, 224, 224)),
    "unet": (lambda: unet(num_classes=3, base=4), (3, 48, 80)),
    "fcn8s": (lambda: fcn8s(num_classes=5, width=1 / 16, fc_channels=32), (3, 45, 61)),
}
