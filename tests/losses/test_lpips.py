"""LPIPS loss/metric: trunk weights from a local torchvision checkpoint, clear error when absent."""
import numpy as np
import pytest
import torch
import torchvision

from basicsr_sinca.losses.lpips_loss import LPIPSLoss, build_lpips
from basicsr_sinca.metrics.lpips_metric import calculate_lpips


def test_trunk_from_local_file(tmp_path):
    torch.manual_seed(0)
    trunk = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / 'alexnet-owt-7be5be79.pth'
    torch.save({k: v for k, v in trunk.items() if k.startswith('features.')}, path)
    model = build_lpips('alex', backbone_path=str(path))
    sd = model.net.state_dict()
    assert torch.equal(sd['slice1.0.weight'], trunk['features.0.weight'])
    assert torch.equal(sd['slice5.10.weight'], trunk['features.10.weight'])
    assert not any(p.requires_grad for p in model.parameters())

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert calculate_lpips(a, a, backbone_path=str(path)) == 0
    d = calculate_lpips(a, b, backbone_path=str(path))
    assert d > 0 and d == pytest.approx(calculate_lpips(b, a, backbone_path=str(path)), rel=1e-5)
    assert calculate_lpips(a, b, crop_border=4, backbone_path=str(path)) != d


def test_loss_ranges_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'vgg16-397923af.pth .*torch_home'):
        LPIPSLoss()
    loss = LPIPSLoss(net='alex', pnet_rand=True, range_norm=False)
    x = torch.rand(2, 3, 32, 32)
    assert loss(x, x).item() == 0
    y = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(y, x)
    value.backward()
    assert value.item() > 0 and y.grad is not None
    loss_pm1 = LPIPSLoss(net='alex', pnet_rand=True, range_norm=True)
    loss_pm1.lpips.load_state_dict(loss.lpips.state_dict())
    assert torch.allclose(loss_pm1(y * 2 - 1, x * 2 - 1), value)


def test_style_loss_is_the_gram_mse_of_normalised_lpips_features():
    from basicsr_sinca.losses.lpips_loss import LPIPSStyleLoss
    torch.manual_seed(0)
    loss = LPIPSStyleLoss(loss_weight=2.0, net='alex', pnet_rand=True)
    pred, target = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    expected, expected_l1 = 0, 0
    for fp, ft in zip(loss.lpips.net(loss.lpips.scaling_layer(pred)), loss.lpips.net(loss.lpips.scaling_layer(target))):
        grams = []
        for f in (fp, ft):
            f = f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)
            b, c, h, w = f.shape
            grams.append(torch.einsum('bchw,bdhw->bcd', f, f) / (c * h * w))
        expected = expected + (grams[0] - grams[1]).square().mean()
        expected_l1 = expected_l1 + (grams[0] - grams[1]).abs().mean()
    assert torch.allclose(loss(pred, target), 2.0 * expected, rtol=1e-5)
    assert loss(target, target) == 0
    loss_l1 = LPIPSStyleLoss(loss_weight=2.0, net='alex', pnet_rand=True, criterion='l1')  # VQFR's Gram L1
    loss_l1.lpips.load_state_dict(loss.lpips.state_dict())
    assert torch.allclose(loss_l1(pred, target), 2.0 * expected_l1, rtol=1e-5)
    with pytest.raises(ValueError, match="criterion must be 'mse' or 'l1'"):
        LPIPSStyleLoss(criterion='L1')
