"""torch networks for the importer tests, written as torchvision defines them
(ResNet-18/50, MobileNetV2; torchvision has no CPU build for the installed
torch here), a U-Net (the original's cropped skips and a padded variant) and
FCN-8s (score layers, ConvTranspose2d upscores, crops, adds). Random
weights; randomize_bn gives each BatchNorm2d non-trivial statistics."""
import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=10, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(width=64, num_classes=10):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width)


def resnet50(width=64, num_classes=10):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width)


class ConvBNActivation(nn.Sequential):
    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand_ratio):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [ConvBNActivation(cin, hidden, 1)] if expand_ratio != 1 else []
        layers += [ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, width_mult=1.0):
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                   [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
        cin, last = int(32 * width_mult), int(1280 * max(1.0, width_mult))
        features = [ConvBNActivation(3, cin, stride=2)]
        for t, c, n, s in setting:
            cout = int(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNActivation(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, padding):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=padding, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=padding, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True))

    def forward(self, x):
        return self.block(x)


class UNet(nn.Module):
    """The U-Net: valid convolutions with the skips cropped by slicing
    (Ronneberger et al.) and ConvTranspose2d upsampling when `cropped`;
    otherwise padded convolutions, bilinear F.interpolate upsampling and
    F.pad of the upsampled map to the skip's size (the common port)."""

    def __init__(self, cin=3, classes=2, width=8, depth=3, cropped=True):
        super().__init__()
        self.cropped = cropped
        pad = 0 if cropped else 1
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.downs = nn.ModuleList([DoubleConv(cin, chans[0], pad)] + [
            DoubleConv(chans[i], chans[i + 1], pad) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        if cropped:
            self.ups = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                      for i in reversed(range(depth))])
        else:
            self.ups = nn.ModuleList([nn.Conv2d(chans[i + 1], chans[i], 1)
                                      for i in reversed(range(depth))])
        self.convs = nn.ModuleList([DoubleConv(chans[i + 1], chans[i], pad)
                                    for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, conv in zip(self.ups, self.convs):
            skip = skips.pop()
            if self.cropped:
                x = up(x)
                dy = (skip.size(2) - x.size(2)) // 2
                dx = (skip.size(3) - x.size(3)) // 2
                skip = skip[:, :, dy:dy + x.size(2), dx:dx + x.size(3)]
            else:
                x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
                dy, dx = skip.size(2) - x.size(2), skip.size(3) - x.size(3)
                x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            x = conv(torch.cat([skip, x], dim=1))
        return self.head(x)


class FCN8s(nn.Module):
    """FCN-8s (Long et al.'s voc-fcn8s) on a small VGG: conv blocks, fc6/fc7 as
    convolutions, score layers, ConvTranspose2d upscores cropped by slicing
    with the original's offsets, and the fuse adds."""

    def __init__(self, classes=3, width=8):
        super().__init__()
        w = [width, width * 2, width * 4, width * 8, width * 8]
        layers, cin = [], 3
        for i, cout in enumerate(w):
            block = [nn.Conv2d(cin, cout, 3, padding=100 if i == 0 else 1), nn.ReLU(True),
                     nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(True),
                     nn.MaxPool2d(2, 2, ceil_mode=True)]
            layers.append(nn.Sequential(*block))
            cin = cout
        self.block1, self.block2, self.block3, self.block4, self.block5 = layers
        self.fc6, self.fc7 = nn.Conv2d(cin, 64, 7), nn.Conv2d(64, 64, 1)
        self.drop6, self.drop7 = nn.Dropout2d(), nn.Dropout2d()
        self.relu = nn.ReLU(inplace=True)
        self.score_fr = nn.Conv2d(64, classes, 1)
        self.score_pool3 = nn.Conv2d(w[2], classes, 1)
        self.score_pool4 = nn.Conv2d(w[3], classes, 1)
        self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, 2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, 2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, 8, bias=False)

    def forward(self, x):
        h = self.block2(self.block1(x))
        pool3 = self.block3(h)
        pool4 = self.block4(pool3)
        h = self.block5(pool4)
        h = self.drop6(self.relu(self.fc6(h)))
        h = self.drop7(self.relu(self.fc7(h)))
        upscore2 = self.upscore2(self.score_fr(h))
        s4 = self.score_pool4(pool4)
        s4 = s4[:, :, 5:5 + upscore2.size(2), 5:5 + upscore2.size(3)]
        upscore_pool4 = self.upscore_pool4(upscore2 + s4)
        s3 = self.score_pool3(pool3)
        s3 = s3[:, :, 9:9 + upscore_pool4.size(2), 9:9 + upscore_pool4.size(3)]
        h = self.upscore8(upscore_pool4 + s3)
        return h[:, :, 31:31 + x.size(2), 31:31 + x.size(3)].contiguous()


class VGG(nn.Module):
    """torchvision's VGG layout, small: conv-ReLU blocks with max pools,
    AdaptiveAvgPool2d((7, 7)) (the identity on a 7x7 map, a 2x2 average on
    14x14), flatten, and the Linear-ReLU-Dropout classifier."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        cfg, layers, cin = [width, "M", width * 2, "M", width * 4, width * 4, "M"], [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(cin * 49, 32), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(32, classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def randomize_bn(module, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (the defaults,
    mean 0 and var 1, would hide a folding error); eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.3)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return module.eval()
