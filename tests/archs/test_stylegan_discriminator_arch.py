"""Pure-PyTorch StyleGAN2 / SWAGAN discriminators: shapes, gradients, the building blocks (equalized LR, blur,
Haar wavelets, minibatch stddev), spectral norm, input checks, registration, and no compiled ops."""
import ast
import inspect
import math

import pytest
import torch
from torch.nn import functional as F
from torch.nn.utils import parametrize

import basicsr_sinca  # noqa: F401  (registers the archs)
from basicsr_sinca.archs import stylegan_discriminator_arch as sd
from basicsr_sinca.archs.stylegan_discriminator_arch import (Blur, ConvLayer, EqualConv2d, EqualLinear, FromWavelet,
                                                             HaarDWT, HaarIWT, MinibatchStdDev, ResBlock,
                                                             StyleGAN2DiscriminatorPT, SWAGANDiscriminator,
                                                             blur_downsample, fused_leaky_relu, stylegan2_channels)

TINY = dict(channel_multiplier=1, narrow=1 / 16)  # 32 channels everywhere


def make_net(kind, out_size, **kwargs):
    torch.manual_seed(0)
    if kind == 'stylegan2':
        return StyleGAN2DiscriminatorPT(out_size, **TINY, **kwargs)
    if kind == 'stylegan2_sn':
        return StyleGAN2DiscriminatorPT(out_size, spectral_norm=True, **TINY, **kwargs)
    return SWAGANDiscriminator(out_size, **TINY, **kwargs)


@pytest.mark.parametrize('kind', ['stylegan2', 'stylegan2_sn', 'swagan'])
@pytest.mark.parametrize('batch', [1, 3, 6])
def test_shape_and_gradients_reach_input_and_every_parameter(kind, batch):
    net = make_net(kind, 32)
    x = torch.randn(batch, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (batch, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('out_size', [8, 64])
def test_other_sizes(out_size):
    for kind in ('stylegan2', 'swagan'):
        net = make_net(kind, out_size)
        assert net(torch.randn(2, 3, out_size, out_size)).shape == (2, 1)
    assert StyleGAN2DiscriminatorPT(4, **TINY)(torch.randn(2, 3, 4, 4)).shape == (2, 1)


def test_structure_follows_the_channel_table():
    channels = stylegan2_channels(channel_multiplier=2)
    assert channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert stylegan2_channels(2, narrow=0.5)[512] == 32
    net = StyleGAN2DiscriminatorPT(64, channel_multiplier=2, narrow=0.25)
    ch = stylegan2_channels(2, 0.25)
    assert net.conv_in[0].weight.shape == (ch[64], 3, 1, 1)
    assert len(net.blocks) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert [b.conv2[1].weight.shape[0] for b in net.blocks] == [ch[32], ch[16], ch[8], ch[4]]
    assert net.head.final_linear[0].weight.shape == (ch[4], ch[4] * 16)
    assert net.head.final_linear[1].weight.shape == (1, ch[4])
    # skip path: blur + 1x1 stride-2 conv, no bias and no activation
    skip = net.blocks[0].skip
    assert isinstance(skip[0], Blur) and skip[1].stride == 2 and len(skip) == 2
    assert [n for n, _ in skip.named_parameters()] == ['1.weight']

    swagan = SWAGANDiscriminator(64, channel_multiplier=2, narrow=0.25)
    # wavelet image at 32, 16, 8, 4; only the first reads the DWT of the input directly
    assert [f.downsample for f in swagan.from_wavelets] == [False, True, True, True]
    assert swagan.from_wavelets[0].conv[0].weight.shape == (ch[64], 12, 1, 1)
    assert len(swagan.blocks) == 3


@pytest.mark.parametrize('cls', [StyleGAN2DiscriminatorPT, SWAGANDiscriminator])
def test_wrong_input_size_raises(cls):
    net = cls(32, **TINY)
    with pytest.raises(ValueError, match=r'\(B, 3, 32, 32\)'):
        net(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match='32'):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='power of two'):
        cls(48)


def test_haar_dwt_is_orthonormal_and_invertible():
    torch.manual_seed(0)
    dwt, iwt = HaarDWT(), HaarIWT()
    x = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    w = dwt(x)
    assert w.shape == (2, 12, 8, 4)
    assert torch.allclose(iwt(w), x, atol=1e-6)
    assert torch.allclose(dwt(iwt(w)), w, atol=1e-6)
    assert torch.allclose(w.pow(2).sum(), x.pow(2).sum())  # energy preserved
    # a constant image has only an LL band, equal to 2 * value (orthonormal: 4 pixels / 2)
    w = dwt(torch.full((1, 3, 4, 4), 0.5))
    assert torch.allclose(w[:, :3], torch.ones(1, 3, 2, 2)) and w[:, 3:].abs().max() == 0
    # a horizontal alternation (+1, -1, ...) lives entirely in LH
    alt = torch.tensor([1., -1.]).repeat(8).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    w = dwt(alt)
    assert w[:, 3:6].abs().min() == 2 and w[:, :3].abs().max() == 0 and w[:, 6:].abs().max() == 0
    # every basis image maps to a unit vector: the transform matrix is orthonormal
    basis = torch.eye(16, dtype=torch.float64).view(16, 1, 4, 4)
    matrix = dwt(basis).reshape(16, 16)
    assert torch.allclose(matrix @ matrix.T, torch.eye(16, dtype=torch.float64))


def test_from_wavelet_resamples_in_the_pixel_domain():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    layer = FromWavelet(8, downsample=True)
    wavelets, feats = layer(HaarDWT()(x), torch.zeros(2, 8, 4, 4))
    expected = HaarDWT()(blur_downsample((1, 3, 3, 1))(x))
    assert wavelets.shape == (2, 12, 4, 4) and feats.shape == (2, 8, 4, 4)
    assert torch.allclose(wavelets, expected, atol=1e-5)
    assert torch.allclose(feats, layer.conv(expected), atol=1e-5)


def test_blur_kernel_and_constant_image():
    blur = Blur((1, 3, 3, 1), pad=(2, 1))
    assert torch.allclose(blur.kernel.sum(), torch.tensor(1.))
    assert torch.allclose(blur.kernel, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    x = torch.full((1, 2, 12, 12), 3.)
    y = blur(x)
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 3.))
    assert y[..., 0, 0].max() < 3  # zero padding darkens the border only
    down = blur_downsample((1, 3, 3, 1))(x)
    assert down.shape == (1, 2, 6, 6) and torch.allclose(down[..., 1:-1, 1:-1], torch.full((1, 2, 4, 4), 3.))
    # float64 inputs use a float64 kernel
    assert blur(x.double()).dtype == torch.float64


@pytest.mark.parametrize('kernel_size', [1, 3])
def test_downsampling_conv_layer_halves_the_resolution(kernel_size):
    layer = ConvLayer(4, 5, kernel_size, downsample=True)
    assert layer(torch.randn(1, 4, 16, 12)).shape == (1, 5, 8, 6)
    assert ResBlock(4, 5)(torch.randn(1, 4, 8, 8)).shape == (1, 5, 4, 4)


def test_equalized_learning_rate():
    torch.manual_seed(0)
    conv = EqualConv2d(6, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 6, 8, 8)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight / math.sqrt(6 * 9), conv.bias, padding=1), atol=1e-6)
    lin = EqualLinear(50, 7)
    with torch.no_grad():
        lin.bias.normal_()
    v = torch.randn(3, 50)
    assert torch.allclose(lin(v), F.linear(v, lin.weight / math.sqrt(50), lin.bias), atol=1e-6)
    act = EqualLinear(50, 7, activate=True)
    ref = F.leaky_relu(F.linear(v, act.weight / math.sqrt(50)) + act.bias, 0.2) * math.sqrt(2)
    assert torch.allclose(act(v), ref, atol=1e-6)
    # raw weights are N(0, 1): the run-time scale alone keeps the output variance that of the input
    big = EqualLinear(1024, 1024)
    assert abs(big.weight.std().item() - 1) < 0.01
    assert abs(big(torch.randn(256, 1024)).std().item() - 1) < 0.05


def test_fused_leaky_relu():
    x = torch.tensor([[-1., 1.], [2., -3.]])
    bias = torch.tensor([0.5, -2.])
    expected = torch.tensor([[-0.5 * 0.2, -1 * 0.2], [2.5, -5 * 0.2]]) * math.sqrt(2)
    assert torch.allclose(fused_leaky_relu(x, bias), expected)
    assert fused_leaky_relu(torch.randn(2, 3, 4, 4), torch.zeros(3)).shape == (2, 3, 4, 4)


def test_minibatch_stddev():
    layer = MinibatchStdDev(group_size=4)
    same = torch.randn(1, 5, 4, 4).repeat(4, 1, 1, 1)
    out = layer(same)
    assert out.shape == (4, 6, 4, 4) and torch.equal(out[:, :5], same)
    assert out[:, 5].abs().max() < 1e-3  # sqrt(eps) only
    # group of samples i, i + B / G; manual reference for B = 4, G = 2
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, 3)
    out = MinibatchStdDev(group_size=2)(x)
    for i in range(4):
        pair = x[[i % 2, i % 2 + 2]]
        ref = torch.sqrt(pair.var(0, unbiased=False) + 1e-8).mean()
        assert torch.allclose(out[i, 6], torch.full((3, 3), ref.item()), atol=1e-6)
    # batch sizes not divisible by the group: the largest divisor not above it is used
    assert [layer.group_for(b) for b in (1, 2, 3, 4, 5, 6, 7, 8)] == [1, 2, 3, 4, 1, 3, 1, 4]
    for b in (1, 3, 5, 6):
        assert layer(torch.randn(b, 5, 4, 4)).shape == (b, 6, 4, 4)
    # a single sample has no spread
    assert layer(torch.randn(1, 5, 4, 4))[:, 5].abs().max() < 1e-3


def test_spectral_norm_on_final_linears():
    plain = make_net('stylegan2', 16)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    net = make_net('stylegan2_sn', 16)
    linears = list(net.head.final_linear)
    assert all(parametrize.is_parametrized(m, 'weight') for m in linears)
    assert [m for m in net.modules() if parametrize.is_parametrized(m)] == linears
    with torch.no_grad():
        for _ in range(30):  # power iteration runs once per training-mode forward
            net.head(torch.randn(2, 32, 4, 4))
    for m in linears:
        assert abs(torch.linalg.matrix_norm(m.weight, ord=2).item() - 1) < 0.05
    # the state dict round-trips into a fresh SN network
    fresh = StyleGAN2DiscriminatorPT(16, spectral_norm=True, **TINY)
    fresh.load_state_dict(net.state_dict())
    net.eval(), fresh.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(net(x), fresh(x))


def test_registered_names():
    from basicsr.utils.registry import ARCH_REGISTRY
    assert ARCH_REGISTRY.get('StyleGAN2DiscriminatorPT') is StyleGAN2DiscriminatorPT
    assert ARCH_REGISTRY.get('SWAGANDiscriminator') is SWAGANDiscriminator
    assert ARCH_REGISTRY.get('StyleGAN2Discriminator') is not StyleGAN2DiscriminatorPT  # BasicSR's own stays


def test_no_compiled_ops_are_used(monkeypatch):
    tree = ast.parse(inspect.getsource(sd))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {'math', 'torch', 'torch.nn', 'basicsr.utils.registry'}
    assert not any(getattr(v, '__module__', '') and v.__module__.startswith('basicsr.ops') for v in vars(sd).values())
    # BasicSR's compiled entry points are never called (they would raise here)
    import basicsr.ops.fused_act as fused_act
    import basicsr.ops.upfirdn2d as upfirdn2d

    def boom(*args, **kwargs):
        raise AssertionError('compiled op called')

    monkeypatch.setattr(fused_act, 'fused_leaky_relu', boom)
    monkeypatch.setattr(upfirdn2d, 'upfirdn2d', boom)
    for kind in ('stylegan2_sn', 'swagan'):
        make_net(kind, 16)(torch.randn(2, 3, 16, 16)).sum().backward()


def test_component_discriminator_logits_and_features():
    from basicsr_sinca.archs.stylegan_discriminator_arch import ComponentDiscriminator
    torch.manual_seed(0)
    d = ComponentDiscriminator()
    x = torch.rand(2, 3, 80, 80, requires_grad=True)
    logits, feats = d(x, return_feats=True)
    assert logits.shape == (2, 1, 20, 20)
    assert [tuple(f.shape) for f in feats] == [(2, 128, 40, 40), (2, 256, 20, 20)]
    assert d(x)[1] is None
    logits.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in d.parameters())
