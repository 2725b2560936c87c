"""PSNR / SSIM after VQFR's mean/variance correction (``calculate_psnr_mean_var``, ``calculate_ssim_mean_var``).

VQFR reports PSNR / SSIM after matching each restored image's per-channel mean and standard deviation to the
ground truth (its ``--correct_mean_var``). These metrics do the same, then call BasicSR's own
:func:`basicsr.metrics.psnr_ssim.calculate_psnr` / :func:`~basicsr.metrics.psnr_ssim.calculate_ssim`, so a table can
show either variant and say which. Higher is better.
"""
import numpy as np
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY

__all__ = ['correct_mean_var', 'calculate_psnr_mean_var', 'calculate_ssim_mean_var']


def correct_mean_var(img, img2, input_order='HWC'):
    """Match the per-channel mean and standard deviation of ``img`` to those of ``img2``.

    Per channel, in float64 over the whole image (before any border crop):
    ``(x - mean_x) / std_x * std_gt + mean_gt`` (population std); a constant channel of ``img`` (std 0) becomes the
    GT mean. The result is clipped to [0, 255] and rounded to uint8, as the corrected image would be if written to
    disk. ``img`` itself is not modified.

    Args:
        img (ndarray): Restored image, [0, 255] (uint8 or float), HWC / CHW / HW.
        img2 (ndarray): Ground truth of the same shape.
        input_order (str): ``'HWC'`` (default) or ``'CHW'``: where the channels are. A 2-D image is one channel.

    Returns:
        ndarray: The corrected image, uint8, the shape and layout of ``img``.

    Raises:
        ValueError: the shapes differ, or an unknown ``input_order``.
    """
    img, img2 = np.asarray(img), np.asarray(img2)
    if img.shape != img2.shape:
        raise ValueError(f'mean/variance correction: image shapes differ: {img.shape} (restored) vs '
                         f'{img2.shape} (GT)')
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    x = img.astype(np.float64)  # a new array: the caller's image stays as it is
    gt = img2.astype(np.float64)
    if x.ndim == 2:
        x, gt = x[..., None], gt[..., None]
    elif input_order == 'CHW':
        x, gt = np.moveaxis(x, 0, -1), np.moveaxis(gt, 0, -1)
    axes = (0, 1)
    mean_x, std_x = x.mean(axis=axes), x.std(axis=axes)
    mean_gt, std_gt = gt.mean(axis=axes), gt.std(axis=axes)
    flat = std_x == 0
    scale = np.divide(std_gt, std_x, out=np.zeros_like(std_gt), where=~flat)  # constant channel -> the GT mean
    out = (x - mean_x) * scale + mean_gt
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        return out[..., 0]
    return np.ascontiguousarray(np.moveaxis(out, -1, 0)) if input_order == 'CHW' else out


@METRIC_REGISTRY.register()
def calculate_psnr_mean_var(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, **kwargs):
    """PSNR (dB) after VQFR's mean/variance correction of the restored image ``img`` to the GT ``img2``.

    ``img`` is corrected by :func:`correct_mean_var` (per channel, float64, whole image, then clipped to [0, 255]
    and rounded to uint8 as an image written to disk), then BasicSR's ``calculate_psnr`` runs with the same
    arguments.

    Args:
        img (ndarray): Restored image, HWC BGR, uint8 or float in [0, 255].
        img2 (ndarray): Ground truth, same shape.
        crop_border (int): Pixels cropped from each border (after the correction). Default: 0.
        input_order (str): ``'HWC'`` (default) or ``'CHW'``.
        test_y_channel (bool): PSNR on the Y channel of YCbCr. Default: False.

    Returns:
        float: PSNR (inf for identical images).
    """
    corrected = correct_mean_var(img, img2, input_order)
    return calculate_psnr(corrected, img2, crop_border, input_order=input_order, test_y_channel=test_y_channel,
                          **kwargs)


@METRIC_REGISTRY.register()
def calculate_ssim_mean_var(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, **kwargs):
    """SSIM after VQFR's mean/variance correction of the restored image ``img`` to the GT ``img2``.

    ``img`` is corrected by :func:`correct_mean_var` (per channel, float64, whole image, then clipped to [0, 255]
    and rounded to uint8 as an image written to disk), then BasicSR's ``calculate_ssim`` runs with the same
    arguments.

    Args:
        img (ndarray): Restored image, HWC BGR, uint8 or float in [0, 255].
        img2 (ndarray): Ground truth, same shape.
        crop_border (int): Pixels cropped from each border (after the correction). Default: 0.
        input_order (str): ``'HWC'`` (default) or ``'CHW'``.
        test_y_channel (bool): SSIM on the Y channel of YCbCr. Default: False.

    Returns:
        float: SSIM (1.0 for identical images).
    """
    corrected = correct_mean_var(img, img2, input_order)
    return calculate_ssim(corrected, img2, crop_border, input_order=input_order, test_y_channel=test_y_channel,
                          **kwargs)
