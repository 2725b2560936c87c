"""LPIPS as a BasicSR metric (``calculate_lpips``), lower is better."""
import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from basicsr_sinca.losses.lpips_loss import build_lpips

__all__ = ['calculate_lpips']

_MODELS = {}


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, crop_border=0, net='alex', pnet_rand=False, backbone_path=None, **kwargs):
    """LPIPS distance between two images as BasicSR metrics receive them (HWC BGR uint8, [0, 255]).

    Args:
        img, img2 (ndarray): Images to compare.
        crop_border (int): Pixels cropped from each border. Default: 0.
        net (str): ``'alex'`` (default, the LPIPS paper's metric) or ``'vgg'``.
        pnet_rand (bool): Random trunk (tests only).
        backbone_path (str | None): Local torchvision trunk weights (see :func:`build_lpips`).

    Returns:
        float: LPIPS distance.
    """
    if img.shape != img2.shape:
        raise ValueError(f'calculate_lpips: image shapes differ: {img.shape} vs {img2.shape}')
    key = (net, bool(pnet_rand), backbone_path)
    if key not in _MODELS:
        _MODELS[key] = build_lpips(net, pnet_rand, backbone_path)
    model = _MODELS[key]
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model.to(device)

    def to_tensor(x):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, axis=2)
        if crop_border:
            x = x[crop_border:-crop_border, crop_border:-crop_border]
        x = x[..., 2::-1] / 255.0 * 2 - 1  # BGR [0, 255] -> RGB [-1, 1]
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float()[None].to(device)

    with torch.no_grad():
        return float(model(to_tensor(img), to_tensor(img2)).mean())
