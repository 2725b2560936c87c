"""ArcFace ResNet-18 (identity loss network): shapes, the released layout's key names, strict loading through the
package loader, the gray resize and the one-line input error."""
import pytest
import torch

from basicsr_sinca.archs.arcface_arch import ArcFaceResNet, gray_resize_for_identity


def test_embeddings_and_layout(tmp_path):
    torch.manual_seed(0)
    net = ArcFaceResNet().eval()
    with torch.no_grad():
        emb = net(torch.rand(3, 1, 128, 128))
    assert emb.shape == (3, 512)
    sd = net.state_dict()
    shapes = {'conv1.weight': (64, 1, 3, 3), 'layer1.0.bn0.weight': (64, ), 'layer1.1.conv2.weight': (64, 64, 3, 3),
              'layer2.0.downsample.0.weight': (128, 64, 1, 1), 'layer4.1.prelu.weight': (1, ),
              'bn4.running_var': (512, ), 'fc5.weight': (512, 512 * 8 * 8), 'bn5.running_mean': (512, )}
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert 'layer1.0.downsample.0.weight' not in sd  # 64 -> 64 at stride 1: identity shortcut
    path = tmp_path / 'arcface_resnet18.pth'
    torch.save(sd, path)  # the release is a plain state dict
    loaded = ArcFaceResNet(model_path=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(torch.ones(1, 1, 128, 128)), net(torch.ones(1, 1, 128, 128)))
    with pytest.raises(ValueError, match=r'expected gray faces \(B, 1, 128, 128\), got \(1, 3, 128, 128\)'):
        net(torch.rand(1, 3, 128, 128))


def test_gray_resize():
    img = torch.zeros(1, 3, 64, 64)
    img[:, 1] = 1.0  # pure green
    gray = gray_resize_for_identity(img)
    assert gray.shape == (1, 1, 128, 128) and torch.allclose(gray, torch.full_like(gray, 0.5870))
