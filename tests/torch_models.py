"""torch modules for the importer tests that fastconv._torch_networks (the
torchvision-equivalent networks, used for the rest) has not got: U-Nets whose
skips are cropped by slicing after valid convolutions, or whose upsampled maps
are bilinearly interpolated and F.pad-ded to the skip's size. Their weights are
torch's default initialisation; randomize_bn gives each BatchNorm2d non-trivial
statistics (for these and for modules the tests define)."""
import torch
import torch.nn.functional as F
from torch import nn


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
