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
