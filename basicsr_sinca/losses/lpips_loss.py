"""LPIPS as a loss (CodeFormer's ``LPIPSLoss``) and RestoreFormer's style loss on the LPIPS trunk, with the trunk
weights taken from a local file."""
import warnings
from os import path as osp

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_sinca.utils.checkpoint import load_untrusted

__all__ = ['LPIPSLoss', 'LPIPSStyleLoss', 'build_lpips', 'TRUNK_FILES']

# torchvision checkpoints the LPIPS trunks are made of (what torchvision would download)
TRUNK_FILES = {'vgg': 'vgg16-397923af.pth', 'alex': 'alexnet-owt-7be5be79.pth'}


def _trunk_candidates(net):
    name = TRUNK_FILES[net]
    return [osp.join(torch.hub.get_dir(), 'checkpoints', name), osp.join('experiments', 'pretrained_models', name)]


def build_lpips(net='vgg', pnet_rand=False, backbone_path=None):
    """An ``lpips.LPIPS`` network (linear heads from the lpips package, v0.1) in eval mode, frozen.

    The trunk comes from ``backbone_path`` (a torchvision ``vgg16``/``alexnet`` state dict), else from
    torch's hub cache or ``experiments/pretrained_models/`` (file names in :data:`TRUNK_FILES`). With
    ``pnet_rand`` the trunk stays random (tests only: the distances are then not LPIPS).

    Raises:
        FileNotFoundError: no trunk weights found; the message names the file and where to put it.
    """
    import lpips
    if net not in TRUNK_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(TRUNK_FILES)}, got {net!r}")
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter('ignore', UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    if not pnet_rand:
        path = backbone_path or next((p for p in _trunk_candidates(net) if osp.isfile(p)), None)
        if path is None or not osp.isfile(path):
            where = backbone_path or ' or '.join(_trunk_candidates(net))
            raise FileNotFoundError(
                f'LPIPS ({net}) needs the torchvision trunk weights {TRUNK_FILES[net]} (no download here): put the '
                f'file at {where}, or set backbone_path; pnet_rand: true gives a random trunk (tests only)')
        source = load_untrusted(path)
        trunk = model.net.state_dict()
        # lpips keeps torchvision's layer indices inside its slices: slice{k}.{i}.{p} <- features.{i}.{p}
        mapped = {k: source[f"features.{k.split('.', 1)[1]}"] for k in trunk}
        model.net.load_state_dict(mapped, strict=True)
    for p in model.parameters():
        p.requires_grad = False
    return model.eval()


@LOSS_REGISTRY.register()
class LPIPSLoss(nn.Module):
    """LPIPS perceptual loss.

    Args:
        loss_weight (float): Default: 1.0.
        net (str): ``'vgg'`` (CodeFormer) or ``'alex'``. Default: ``'vgg'``.
        range_norm (bool): Inputs are in [-1, 1] (False: in [0, 1] and mapped to [-1, 1]). Default: True,
            CodeFormer's images.
        pnet_rand (bool): Random trunk (tests only). Default: False.
        backbone_path (str | None): Local torchvision trunk weights.
    """

    def __init__(self, loss_weight=1.0, net='vgg', range_norm=True, pnet_rand=False, backbone_path=None):
        super().__init__()
        self.loss_weight, self.range_norm = loss_weight, range_norm
        self.lpips = build_lpips(net, pnet_rand, backbone_path)

    def train(self, mode=True):
        super().train(mode)
        self.lpips.eval()  # dropout in the heads stays off
        return self

    def forward(self, pred, target):
        """(B, 3, H, W) images -> scalar weighted mean LPIPS distance."""
        if not self.range_norm:
            pred, target = pred * 2 - 1, target * 2 - 1
        return self.loss_weight * self.lpips(pred, target.detach()).mean()




@LOSS_REGISTRY.register()
class LPIPSStyleLoss(LPIPSLoss):
    """RestoreFormer's style loss: MSE between the Gram matrices of the LPIPS trunk's channel-normalised features
    (each of its five layers), Gram = f f^T / (C·H·W); RestoreFormer weights it 1e9.

    Args: as :class:`LPIPSLoss` (``loss_weight`` default 1e9), and ``criterion``: ``'mse'`` (RestoreFormer) or
    ``'l1'`` (the Gram L1 of VQFR's style term).
    """

    def __init__(self, loss_weight=1e9, net='vgg', range_norm=True, pnet_rand=False, backbone_path=None,
                 criterion='mse'):
        criteria = {'mse': torch.nn.functional.mse_loss, 'l1': torch.nn.functional.l1_loss}
        if criterion not in criteria:
            raise ValueError(f"LPIPSStyleLoss: criterion must be 'mse' or 'l1', got {criterion!r}")
        super().__init__(loss_weight, net, range_norm, pnet_rand, backbone_path)
        self.criterion = criteria[criterion]

    def features(self, x):
        import lpips
        return [lpips.normalize_tensor(f) for f in self.lpips.net(self.lpips.scaling_layer(x))]

    @staticmethod
    def gram(f):
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    def forward(self, pred, target):
        """(B, 3, H, W) images -> scalar weighted sum over layers of the Gram matrices' MSE."""
        if not self.range_norm:
            pred, target = pred * 2 - 1, target * 2 - 1
        with torch.no_grad():
            target_grams = [self.gram(f) for f in self.features(target)]
        loss = sum(self.criterion(self.gram(f), g) for f, g in zip(self.features(pred), target_grams))
        return self.loss_weight * loss
