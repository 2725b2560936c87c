"""ArcFace ResNet for identity losses (RestoreFormer's and GFPGAN's ``arcface_resnet18.pth``): the ``resnet_face18``
network of arcface-pytorch, gray 128x128 faces -> 512-d embeddings.

Registered as ``ArcFaceResNet`` (RestoreFormer and GFPGAN both register ``ResNetArcFace``; the two would collide in
one process). Key names follow the released file as we read its layout (``conv1``, ``bn1``, ``prelu``,
``layer{1..4}.{i}.{bn0,conv1,bn1,prelu,conv2,bn2,downsample.0,downsample.1}``, ``bn4``, ``fc5``, ``bn5``); no golden
case covers it, so loading the released file is checked by key names and shapes only, strictly.
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict

__all__ = ['IRBlock', 'ArcFaceResNet', 'gray_resize_for_identity']


def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class IRBlock(nn.Module):
    """Improved residual block (pre-BN): ``bn0 -> conv1 -> bn1 -> prelu -> conv2 (stride) -> bn2`` + shortcut,
    then PReLU (the block's one ``prelu`` is used twice, as in arcface-pytorch)."""

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.prelu = nn.PReLU()
        self.conv2 = conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        return self.prelu(out + (x if self.downsample is None else self.downsample(x)))


@ARCH_REGISTRY.register()
class ArcFaceResNet(nn.Module):
    """ArcFace ResNet-18 (IRBlock x [2, 2, 2, 2], no squeeze-excitation).

    Args:
        layers (list[int]): Blocks per stage. Default: [2, 2, 2, 2].
        in_size (int): Side of the gray input. Default: 128 (the released network's fc5 expects 512·8·8).
        model_path (str | None): Local weights (``arcface_resnet18.pth``: a plain state dict or BasicSR
            ``params`` / ``params_ema``), loaded strictly through the package's loader.
    """

    def __init__(self, layers=(2, 2, 2, 2), in_size=128, model_path=None):
        super().__init__()
        self.in_size = in_size
        self.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        channels, stages = 64, []
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or channels != width:
                downsample = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            stage = [IRBlock(channels, width, stride, downsample)] + [IRBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        side = in_size // 16  # maxpool and three stride-2 stages
        self.fc5 = nn.Linear(512 * side * side, 512)
        self.bn5 = nn.BatchNorm1d(512)
        if model_path is not None:
            state_dict, used = read_state_dict(model_path, 'params', ('params', 'params_ema', 'state_dict'))
            load_state_dict_report(self, state_dict, strict=True, source=f'ArcFace {model_path} [{used}]')

    def forward(self, x):
        """Gray faces (B, 1, in_size, in_size) -> embeddings (B, 512)."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2:] != (self.in_size, self.in_size):
            raise ValueError(f'ArcFaceResNet: expected gray faces (B, 1, {self.in_size}, {self.in_size}), got '
                             f'{tuple(x.shape)}')
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(torch.flatten(x, 1)))


def gray_resize_for_identity(img, size=128):
    """RGB faces (B, 3, H, W) -> gray (B, 1, size, size) (ITU-R 601 luma weights, bilinear), on the images' own scale
    (RestoreFormer and GFPGAN feed [-1, 1] images)."""
    gray = 0.2989 * img[:, 0:1] + 0.5870 * img[:, 1:2] + 0.1140 * img[:, 2:3]
    return nn.functional.interpolate(gray, (size, size), mode='bilinear', align_corners=False)
