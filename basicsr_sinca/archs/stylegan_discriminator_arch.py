"""StyleGAN2 and SWAGAN discriminators in pure PyTorch (no compiled ops), the "global" discriminators of VQFR.

* :class:`StyleGAN2DiscriminatorPT` — the residual discriminator of StyleGAN2 (Karras et al., 2020), used by VQFR
  v2; ``spectral_norm=True`` gives VQFR's variant (spectral norm on the two final linear layers).
* :class:`SWAGANDiscriminator` — the wavelet discriminator of SWAGAN (Gal et al., 2021), used by VQFR v1.

Upstream implementations call the compiled ``upfirdn2d`` / ``fused_leaky_relu`` CUDA ops; here the blur is a padded
depthwise ``F.conv2d`` and the biased, gain-scaled leaky ReLU is written in plain torch, so both networks run on
CPU and GPU alike. The names differ from BasicSR's own ``StyleGAN2Discriminator`` (which needs ``basicsr.ops``).
Not state-dict compatible with the upstream discriminators (no released discriminator weights are used).
"""
import math

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

__all__ = ['fused_leaky_relu', 'FusedLeakyReLU', 'EqualConv2d', 'EqualLinear', 'Blur', 'ConvLayer', 'ResBlock',
           'ConvBlock', 'MinibatchStdDev', 'HaarDWT', 'HaarIWT', 'FromWavelet', 'DiscriminatorHead',
           'stylegan2_channels', 'StyleGAN2DiscriminatorPT', 'SWAGANDiscriminator']


def stylegan2_channels(channel_multiplier=2, narrow=1.0):
    """Feature channels per resolution of the StyleGAN2 networks, scaled by ``narrow`` (at least 1).

    Args:
        channel_multiplier (int): Widens the resolutions >= 64. Default: 2.
        narrow (float): Global width factor. Default: 1.0.

    Returns:
        dict[int, int]: ``{resolution: channels}`` for resolutions 4 .. 1024.
    """
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: max(1, int(c * narrow)) for res, c in base.items()}


def check_power_of_two(out_size, minimum):
    if not isinstance(out_size, int) or out_size < minimum or out_size & (out_size - 1) or out_size > 1024:
        raise ValueError(f'out_size must be a power of two in [{minimum}, 1024], got {out_size}')


def fused_leaky_relu(x, bias, negative_slope=0.2, scale=math.sqrt(2)):
    """Leaky ReLU of ``x + bias`` times ``scale``: the "fused" activation of StyleGAN2 in plain torch.

    The sqrt(2) gain keeps the activations' second moment at ~1 (a leaky ReLU with slope 0.2 roughly halves it),
    which equalized learning rate relies on.

    Args:
        x (Tensor): Input of shape (B, C, ...).
        bias (Tensor | None): Per-channel bias of shape (C, ), or None.
        negative_slope (float): Slope for negative inputs. Default: 0.2.
        scale (float): Output gain. Default: sqrt(2).

    Returns:
        Tensor: Same shape as ``x``.
    """
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """:func:`fused_leaky_relu` with a learned per-channel bias (initialised to 0).

    Args:
        channels (int): Number of channels (dim 1 of the input).
        bias (bool): Learn the bias (else none). Default: True.
        negative_slope (float): Slope for negative inputs. Default: 0.2.
        scale (float): Output gain. Default: sqrt(2).
    """

    def __init__(self, channels, bias=True, negative_slope=0.2, scale=math.sqrt(2)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: N(0, 1) weights multiplied by 1/sqrt(fan_in) at run time.

    Scaling at run time rather than at initialisation gives every weight the same dynamic range, so Adam's
    per-parameter step sizes act equally on all layers (Karras et al., 2018).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Square kernel size.
        stride (int): Convolution stride. Default: 1.
        padding (int): Zero padding. Default: 0.
        bias (bool): Add a learned bias (initialised to 0). Default: True.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.stride = stride
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        c_out, c_in, k, _ = self.weight.shape
        return (f'{c_in}, {c_out}, kernel_size={k}, stride={self.stride}, padding={self.padding}, '
                f'bias={self.bias is not None}')


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights scaled by 1/sqrt(in_features) at run time).

    Args:
        in_features (int): Input features.
        out_features (int): Output features.
        activate (bool): Follow with :func:`fused_leaky_relu` (the bias goes inside the activation).
            Default: False.
    """

    def __init__(self, in_features, out_features, activate=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)
        self.activate = activate

    def forward(self, x):
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self):
        c_out, c_in = self.weight.shape
        return f'{c_in}, {c_out}, activate={self.activate}'


class Blur(nn.Module):
    """Low-pass filter: the outer product of a 1-D kernel, normalised to sum 1, as a padded depthwise conv.

    StyleGAN2 blurs before every strided conv so that downsampling does not alias. The kernel is symmetric for the
    usual binomial choices, so correlation (``F.conv2d``) equals convolution.

    Args:
        kernel (Sequence[float]): 1-D filter taps, e.g. ``(1, 3, 3, 1)``.
        pad (tuple[int, int]): Zero padding (before, after), applied to both spatial dims.
        down (int): Keep every ``down``-th output sample (a blurred downsample when 2). Default: 1.
    """

    def __init__(self, kernel, pad, down=1):
        super().__init__()
        k = torch.as_tensor(kernel, dtype=torch.float32)
        k = k[:, None] * k[None, :]
        self.register_buffer('kernel', k / k.sum(), persistent=False)
        self.pad = tuple(pad)
        self.down = down

    def forward(self, x):
        c = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(c, 1, *self.kernel.shape)
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, weight, stride=self.down, groups=c)

    def extra_repr(self):
        return f'kernel_size={self.kernel.shape[0]}, pad={self.pad}, down={self.down}'


def blur_downsample(kernel):
    """A :class:`Blur` halving the resolution (H, W even -> H/2, W/2)."""
    p = len(kernel) - 2
    return Blur(kernel, pad=((p + 1) // 2, p // 2), down=2)


class ConvLayer(nn.Sequential):
    """[blur] -> :class:`EqualConv2d` -> [:class:`FusedLeakyReLU`], the building block of StyleGAN2's networks.

    With ``downsample`` the conv has stride 2 and no padding, and the blur pads so that (H, W) -> (H/2, W/2) for
    any odd kernel size k: the padded blur output is H + k - 2 wide before the strided conv.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Conv kernel size (odd).
        downsample (bool): Blur then stride-2 conv. Default: False.
        resample_kernel (Sequence[float]): 1-D blur taps. Default: (1, 3, 3, 1).
        bias (bool): Learned bias (inside the activation when ``activate``). Default: True.
        activate (bool): Follow with the biased, sqrt(2)-scaled leaky ReLU. Default: True.
    """

    def __init__(self, in_channels, out_channels, kernel_size, downsample=False, resample_kernel=(1, 3, 3, 1),
                 bias=True, activate=True):
        layers = []
        if downsample:
            p = (len(resample_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(resample_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """StyleGAN2's residual downsampling block. (B, C_in, H, W) -> (B, C_out, H/2, W/2).

    Main path: 3x3 conv, blurred stride-2 3x3 conv. Skip: blur + 1x1 stride-2 conv, linear (no bias/activation).
    The sum is divided by sqrt(2) to keep the output variance that of one branch.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        resample_kernel (Sequence[float]): 1-D blur taps. Default: (1, 3, 3, 1).
    """

    def __init__(self, in_channels, out_channels, resample_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, resample_kernel=resample_kernel)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, resample_kernel=resample_kernel,
                              bias=False, activate=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class ConvBlock(nn.Sequential):
    """Plain (non-residual) downsampling block of SWAGAN's discriminator: 3x3 conv, blurred stride-2 3x3 conv.
    (B, C_in, H, W) -> (B, C_out, H/2, W/2). The residual path is not needed there: every scale also gets the
    wavelet input directly (see :class:`FromWavelet`).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        resample_kernel (Sequence[float]): 1-D blur taps. Default: (1, 3, 3, 1).
    """

    def __init__(self, in_channels, out_channels, resample_kernel=(1, 3, 3, 1)):
        super().__init__(
            ConvLayer(in_channels, in_channels, 3),
            ConvLayer(in_channels, out_channels, 3, downsample=True, resample_kernel=resample_kernel))


class MinibatchStdDev(nn.Module):
    """Appends the minibatch standard deviation as extra feature map(s). (B, C, H, W) -> (B, C + F, H, W).

    The batch is split into groups of G samples (sample i is grouped with i + k * B / G, as in StyleGAN2); for each
    group the std over its members is averaged over channels (per feature slice of C / F channels) and pixels,
    giving the discriminator a cue about sample diversity against mode collapse. G = the largest divisor of B not
    above ``group_size``, so any batch size works (upstream requires B divisible by min(group_size, B)).

    Args:
        group_size (int): Maximum group size. Default: 4.
        num_features (int): Number of std feature maps F (C must be divisible by F). Default: 1.
        eps (float): Added to the variance before the square root (finite gradient at zero variance).
            Default: 1e-8.
    """

    def __init__(self, group_size=4, num_features=1, eps=1e-8):
        super().__init__()
        self.group_size = group_size
        self.num_features = num_features
        self.eps = eps

    def group_for(self, batch):
        return next(g for g in range(min(self.group_size, batch), 0, -1) if batch % g == 0)

    def forward(self, x):
        b, c, h, w = x.shape
        g = self.group_for(b)
        y = x.view(g, b // g, self.num_features, c // self.num_features, h, w)
        y = torch.sqrt(y.var(dim=0, unbiased=False) + self.eps)  # (B/G, F, C/F, H, W)
        y = y.mean(dim=(2, 3, 4)).view(b // g, self.num_features, 1, 1)
        y = y.repeat(g, 1, h, w)  # row i of the repeat is group i % (B/G), matching the view above
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_features={self.num_features}'


def _haar_parts(x):
    """The four pixels of every 2x2 block: top-left, top-right, bottom-left, bottom-right."""
    return x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]


class HaarDWT(nn.Module):
    """One level of the orthonormal 2-D Haar wavelet transform. (B, C, H, W) -> (B, 4C, H/2, W/2).

    Every 2x2 block (a b; c d) maps to LL = (a+b+c+d)/2, LH = (a-b+c-d)/2 (horizontal detail),
    HL = (a+b-c-d)/2 (vertical detail), HH = (a-b-c+d)/2: a 4x4 Hadamard matrix / 2, which is orthonormal, so
    the transform preserves energy and :class:`HaarIWT` is its transpose. Output channels are sub-band major:
    ``[LL(C), LH(C), HL(C), HH(C)]``.
    """

    def forward(self, x):
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f'HaarDWT needs even height and width, got {tuple(x.shape[-2:])}')
        a, b, c, d = _haar_parts(x)
        return torch.cat([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=1) / 2


class HaarIWT(nn.Module):
    """Inverse of :class:`HaarDWT`. (B, 4C, H, W) -> (B, C, 2H, 2W)."""

    def forward(self, x):
        ll, lh, hl, hh = x.chunk(4, dim=1)
        a = (ll + lh + hl + hh) / 2
        b = (ll - lh + hl - hh) / 2
        c = (ll + lh - hl - hh) / 2
        d = (ll - lh - hl + hh) / 2
        # (B, C, H, W, 2 rows, 2 cols) -> interleave into (B, C, 2H, 2W)
        top = torch.stack([a, b], dim=-1)
        bottom = torch.stack([c, d], dim=-1)
        out = torch.stack([top, bottom], dim=-3)  # (B, C, H, 2, W, 2)
        n, ch, h, _, w, _ = out.shape
        return out.reshape(n, ch, 2 * h, 2 * w)


class FromWavelet(nn.Module):
    """SWAGAN's from-RGB: reads the wavelet image at this scale and adds it to the running features.

    With ``downsample`` the incoming wavelet image (of the previous, twice larger scale) is first brought to this
    scale in the pixel domain: inverse DWT, blurred 2x downsample, DWT. So each scale sees the sub-bands of a
    properly low-passed image rather than a subsampled set of coefficients.

    Args:
        out_channels (int): Feature channels at this scale.
        in_channels (int): Image channels (the wavelet image has 4x as many). Default: 3.
        downsample (bool): Bring the wavelet image down one scale first. Default: False.
        resample_kernel (Sequence[float]): 1-D blur taps for the downsample. Default: (1, 3, 3, 1).
    """

    def __init__(self, out_channels, in_channels=3, downsample=False, resample_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.iwt = HaarIWT()
            self.blur = blur_downsample(resample_kernel)
            self.dwt = HaarDWT()
        self.conv = ConvLayer(4 * in_channels, out_channels, 1)

    def forward(self, wavelets, features=None):
        """
        Args:
            wavelets (Tensor): Wavelet image of shape (B, 12, 2H, 2W) with ``downsample``, else (B, 12, H, W).
            features (Tensor | None): Running features of shape (B, C, H, W), or None at the first scale.

        Returns:
            tuple[Tensor, Tensor]: The wavelet image at this scale (B, 12, H, W) and the features (B, C, H, W).
        """
        if self.downsample:
            wavelets = self.dwt(self.blur(self.iwt(wavelets)))
        out = self.conv(wavelets)
        return wavelets, out if features is None else out + features


class DiscriminatorHead(nn.Module):
    """Shared StyleGAN2 discriminator head. (B, C, 4, 4) -> (B, 1).

    Minibatch stddev (1 feature), 3x3 conv (C + 1 -> C), flatten, linear C*4*4 -> C with leaky ReLU, linear C -> 1.

    Args:
        channels (int): Input channels C.
        stddev_group (int): Maximum minibatch-stddev group size. Default: 4.
        spectral_norm (bool): Spectral norm on the two linear layers. Default: False.
    """

    def __init__(self, channels, stddev_group=4, spectral_norm=False):
        super().__init__()
        self.stddev = MinibatchStdDev(stddev_group, num_features=1)
        self.final_conv = ConvLayer(channels + 1, channels, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels * 4 * 4, channels, activate=True), EqualLinear(channels, 1))
        if spectral_norm:
            # VQFR's variant: normalise the raw weights; the equal-LR 1/sqrt(fan_in) gain still applies on top
            for layer in self.final_linear:
                nn.utils.parametrizations.spectral_norm(layer, name='weight')

    def forward(self, x):
        out = self.final_conv(self.stddev(x))
        return self.final_linear(out.flatten(1))


def check_input(x, out_size):
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (out_size, out_size):
        raise ValueError(f'expected input of shape (B, 3, {out_size}, {out_size}), got {tuple(x.shape)}')


@ARCH_REGISTRY.register()
class StyleGAN2DiscriminatorPT(nn.Module):
    """StyleGAN2 discriminator (residual architecture) in pure PyTorch; VQFR v2's global discriminator.

    1x1 from-RGB conv, :class:`ResBlock` s from ``out_size`` down to 4x4, then :class:`DiscriminatorHead`.

    Args:
        out_size (int): Input resolution, a power of two in [4, 1024]. Default: 512.
        channel_multiplier (int): Width multiplier of the resolutions >= 64. Default: 2.
        resample_kernel (Sequence[float]): 1-D blur taps used before every downsample. Default: (1, 3, 3, 1).
        stddev_group (int): Maximum minibatch-stddev group size. Default: 4.
        narrow (float): Global width factor. Default: 1.0.
        spectral_norm (bool): Spectral norm on the two final linear layers (VQFR's variant). Default: False.
    """

    def __init__(self, out_size=512, channel_multiplier=2, resample_kernel=(1, 3, 3, 1), stddev_group=4, narrow=1.0,
                 spectral_norm=False):
        super().__init__()
        check_power_of_two(out_size, 4)
        self.out_size = out_size
        channels = stylegan2_channels(channel_multiplier, narrow)
        self.conv_in = ConvLayer(3, channels[out_size], 1)
        blocks, res = [], out_size
        while res > 4:
            blocks.append(ResBlock(channels[res], channels[res // 2], resample_kernel))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.head = DiscriminatorHead(channels[4], stddev_group, spectral_norm)

    def forward(self, x):
        """
        Args:
            x (Tensor): Images of shape (B, 3, out_size, out_size).

        Returns:
            Tensor: Realness logits of shape (B, 1).
        """
        check_input(x, self.out_size)
        return self.head(self.blocks(self.conv_in(x)))


@ARCH_REGISTRY.register()
class SWAGANDiscriminator(nn.Module):
    """SWAGAN discriminator (Gal et al., 2021) in pure PyTorch; VQFR v1's global discriminator.

    The image goes to the Haar wavelet domain (12 channels at out_size / 2). At every scale from out_size / 2 down
    to 4 a :class:`FromWavelet` layer adds the wavelet image of that scale to the features, and a :class:`ConvBlock`
    halves the resolution; a last :class:`FromWavelet` at 4x4 precedes the :class:`DiscriminatorHead`. Widths: the
    entry scale has ``channels[out_size]`` (the image it describes), a block ending at resolution r outputs
    ``channels[r]`` (the StyleGAN2 table).

    Args:
        out_size (int): Input resolution, a power of two in [8, 1024]. Default: 512.
        channel_multiplier (int): Width multiplier of the resolutions >= 64. Default: 2.
        resample_kernel (Sequence[float]): 1-D blur taps used before every downsample. Default: (1, 3, 3, 1).
        stddev_group (int): Maximum minibatch-stddev group size. Default: 4.
        narrow (float): Global width factor. Default: 1.0.
    """

    def __init__(self, out_size=512, channel_multiplier=2, resample_kernel=(1, 3, 3, 1), stddev_group=4, narrow=1.0):
        super().__init__()
        check_power_of_two(out_size, 8)
        self.out_size = out_size
        channels = stylegan2_channels(channel_multiplier, narrow)
        self.dwt = HaarDWT()
        from_wavelets, blocks = [], []
        res, in_ch = out_size // 2, channels[out_size]
        while res > 4:
            from_wavelets.append(FromWavelet(in_ch, downsample=res != out_size // 2, resample_kernel=resample_kernel))
            blocks.append(ConvBlock(in_ch, channels[res // 2], resample_kernel))
            res, in_ch = res // 2, channels[res // 2]
        from_wavelets.append(FromWavelet(in_ch, downsample=res != out_size // 2, resample_kernel=resample_kernel))
        self.from_wavelets = nn.ModuleList(from_wavelets)
        self.blocks = nn.ModuleList(blocks)
        self.head = DiscriminatorHead(in_ch, stddev_group)

    def forward(self, x):
        """
        Args:
            x (Tensor): Images of shape (B, 3, out_size, out_size).

        Returns:
            Tensor: Realness logits of shape (B, 1).
        """
        check_input(x, self.out_size)
        wavelets, features = self.dwt(x), None
        for from_wavelet, block in zip(self.from_wavelets, self.blocks):
            wavelets, features = from_wavelet(wavelets, features)
            features = block(features)
        _, features = self.from_wavelets[-1](wavelets, features)
        return self.head(features)


@ARCH_REGISTRY.register()
class ComponentDiscriminator(nn.Module):
    """Facial-component discriminator (GFPGAN / RestoreFormer: one per left eye, right eye, mouth) on RoI crops.

    ``conv1`` (3 -> 64), ``conv2`` (64 -> 128, blurred stride 2), ``conv3`` (128), ``conv4`` (128 -> 256, stride 2),
    ``conv5`` (256), ``final_conv`` (256 -> 1, no activation): StyleGAN2 conv layers, patch logits at 1/4 of the crop.
    Registered under its own name (GFPGAN and RestoreFormer both register ``FacialComponentDiscriminator``).

    Args:
        resample_kernel (Sequence[float]): 1-D blur taps before the strided convs. Default: (1, 3, 3, 1).
    """

    def __init__(self, resample_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(3, 64, 3, resample_kernel=resample_kernel)
        self.conv2 = ConvLayer(64, 128, 3, downsample=True, resample_kernel=resample_kernel)
        self.conv3 = ConvLayer(128, 128, 3, resample_kernel=resample_kernel)
        self.conv4 = ConvLayer(128, 256, 3, downsample=True, resample_kernel=resample_kernel)
        self.conv5 = ConvLayer(256, 256, 3, resample_kernel=resample_kernel)
        self.final_conv = ConvLayer(256, 1, 3, activate=False)

    def forward(self, x, return_feats=False):
        """Crops (B, 3, S, S) -> logits (B, 1, S/4, S/4) and, with ``return_feats``, the features after ``conv3``
        and ``conv5`` (for the Gram style term), else None."""
        mid = self.conv3(self.conv2(self.conv1(x)))
        top = self.conv5(self.conv4(mid))
        return self.final_conv(top), ([mid, top] if return_feats else None)
