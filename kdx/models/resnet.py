"""CIFAR ResNets (He et al. 2016, §4.2): 6n+2 layers.

A 3×3 convolution with 16 channels, then three stages of n basic blocks (two 3×3 convolutions
each) with 16, 32 and 64 channels on 32×32, 16×16 and 8×8 maps, global average pooling and a
linear classifier. Shortcuts are option A: identity, and where a stage halves the map and
doubles the channels, the input is subsampled by 2 and the new channels are zeros, so shortcuts
add no parameters. ResNet-8/20/56/110 (n = 1/3/9/18) have ≈ 0.078M/0.27M/0.85M/1.7M parameters.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdx.errors import KdxError


def blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6 != 0:
        raise KdxError(f"a CIFAR ResNet has 6n+2 layers; depth={depth} is not of that form",
                       "use depth 8, 14, 20, 32, 44, 56, 110, ...")
    return (depth - 2) // 6


def zero_pad_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Option A: subsample the map by `stride`, append zero channels up to `out_channels`."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    missing = out_channels - x.shape[1]
    if missing > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, missing))
    return x


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + zero_pad_shortcut(x, self.out_channels, self.stride))


class CifarResNet(nn.Module):
    """Takes `pixel_values` (B, 3, 32, 32), returns logits (B, num_labels)."""

    def __init__(self, depth: int, num_labels: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth = depth
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        stages, channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(channels, num_labels)
        self._init_weights()

    def _init_weights(self):
        # He et al. initialise convolutions with their own "MSRA" scheme (fan-out, ReLU gain).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, pixel_values: torch.Tensor | None = None, **other) -> torch.Tensor:
        if pixel_values is None:
            raise KdxError(f"ResNet-{self.depth} needs images (`pixel_values`), but the batch has {sorted(other)}",
                           "use a vision task (task=vision/cifar10 or vision/cifar100) with a ResNet pair")
        x = F.relu(self.stem_bn(self.stem(pixel_values)))
        x = self.stages(x)
        return self.classifier(x.mean(dim=(2, 3)))


def cifar_resnet(depth: int, num_labels: int, vocab_size: int | None = None, width: int = 16) -> CifarResNet:
    """Builder for model specs (`_target_: kdx.models.resnet.cifar_resnet`); `vocab_size` is unused."""
    return CifarResNet(depth, num_labels, width=width)
