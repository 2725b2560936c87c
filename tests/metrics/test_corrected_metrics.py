"""PSNR / SSIM with VQFR's mean/variance correction, on a real photo (scikit-image's astronaut, BGR)."""
import math

import numpy as np
import pytest
from basicsr.metrics import calculate_metric
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY

import basicsr_sinca  # noqa: F401  (registers the metrics)
from basicsr_sinca.metrics.corrected_metric import (calculate_psnr_mean_var, calculate_ssim_mean_var,
                                                   correct_mean_var)
from basicsr_sinca.utils.sample_data import load_photo


@pytest.fixture(scope='module')
def gt():
    return load_photo('astronaut')[::4, ::4].copy()  # 128 x 128 x 3, BGR uint8


def _gain_offset(img, gains=(0.8, 0.9, 0.75), offsets=(30, 10, 40)):
    """A global per-channel colour/contrast shift, kept inside [0, 255] (no clipping), as uint8."""
    out = img.astype(np.float64) * np.array(gains) + np.array(offsets)
    assert out.max() <= 255
    return out.round().astype(np.uint8)


def test_gain_and_offset_are_corrected(gt):
    shifted = _gain_offset(gt)
    plain_psnr = calculate_psnr(shifted, gt, 0)
    corrected_psnr = calculate_psnr_mean_var(shifted, gt)
    assert plain_psnr < 30
    assert corrected_psnr > 40 and corrected_psnr > plain_psnr + 15
    assert calculate_ssim(shifted, gt, 0) < calculate_ssim_mean_var(shifted, gt)
    assert calculate_ssim_mean_var(shifted, gt) > 0.99
    # an exact gain/offset of a float image is undone exactly (up to the final rounding)
    exact = gt.astype(np.float64) * 0.7 + 20
    assert calculate_psnr(exact, gt, 0) < 30
    assert calculate_psnr_mean_var(exact, gt) > 60


def test_identical_images(gt):
    assert calculate_psnr_mean_var(gt, gt) == math.inf
    assert calculate_ssim_mean_var(gt, gt) == pytest.approx(1.0)
    assert calculate_psnr_mean_var(gt.astype(np.float32), gt, crop_border=4, test_y_channel=True) == math.inf


def test_matches_basicsr_on_the_corrected_image(gt):
    rng = np.random.default_rng(0)
    noisy = np.clip(_gain_offset(gt).astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    corrected = correct_mean_var(noisy, gt)
    assert corrected.dtype == np.uint8 and corrected.shape == gt.shape
    for kw in ({}, {'crop_border': 4}, {'test_y_channel': True}):
        crop = kw.get('crop_border', 0)
        y = kw.get('test_y_channel', False)
        assert calculate_psnr_mean_var(noisy, gt, **kw) == calculate_psnr(corrected, gt, crop, test_y_channel=y)
        assert calculate_ssim_mean_var(noisy, gt, **kw) == calculate_ssim(corrected, gt, crop, test_y_channel=y)
    # channel statistics now follow the GT (up to the clipping to [0, 255] of the photo's dark/bright pixels)
    np.testing.assert_allclose(corrected.reshape(-1, 3).mean(0), gt.reshape(-1, 3).mean(0), atol=2)
    np.testing.assert_allclose(corrected.reshape(-1, 3).std(0), gt.reshape(-1, 3).std(0), rtol=0.03)
    # CHW input gives the same numbers
    chw = np.ascontiguousarray(noisy.transpose(2, 0, 1))
    gt_chw = np.ascontiguousarray(gt.transpose(2, 0, 1))
    assert calculate_psnr_mean_var(chw, gt_chw, input_order='CHW') == calculate_psnr_mean_var(noisy, gt)


def test_input_not_modified(gt):
    shifted = _gain_offset(gt)
    before = shifted.copy()
    as_float = shifted.astype(np.float64)
    float_before = as_float.copy()
    gt_before = gt.copy()
    calculate_psnr_mean_var(shifted, gt, crop_border=2)
    calculate_ssim_mean_var(as_float, gt)
    assert np.array_equal(shifted, before) and np.array_equal(as_float, float_before)
    assert np.array_equal(gt, gt_before)


def test_constant_channel(gt):
    restored = gt.copy()
    restored[..., 1] = 77  # green constant: std 0
    corrected = correct_mean_var(restored, gt)
    assert np.array_equal(corrected[..., 1], np.full(gt.shape[:2], round(gt[..., 1].mean()), np.uint8))
    assert np.array_equal(corrected[..., 0], gt[..., 0]) and np.array_equal(corrected[..., 2], gt[..., 2])
    psnr = calculate_psnr_mean_var(restored, gt)
    ssim = calculate_ssim_mean_var(restored, gt)
    assert np.isfinite(psnr) and np.isfinite(ssim)
    assert psnr > calculate_psnr(restored, gt, 0)
    flat = np.full_like(gt, 128)  # all channels constant, in both images
    assert calculate_psnr_mean_var(flat, flat) == math.inf
    assert np.isfinite(calculate_ssim_mean_var(flat, gt))


def test_shape_mismatch(gt):
    with pytest.raises(ValueError, match=r'\(128, 128, 3\).*\(64, 64, 3\)'):
        calculate_psnr_mean_var(gt, gt[:64, :64])
    with pytest.raises(ValueError, match=r'\(64, 64, 3\).*\(128, 128, 3\)'):
        calculate_ssim_mean_var(gt[:64, :64], gt)


def test_registered_and_called_the_basicsr_way(gt):
    assert METRIC_REGISTRY.get('calculate_psnr_mean_var') is calculate_psnr_mean_var
    assert METRIC_REGISTRY.get('calculate_ssim_mean_var') is calculate_ssim_mean_var
    shifted = _gain_offset(gt)
    data = {'img': shifted, 'img2': gt}
    opt = {'type': 'calculate_psnr_mean_var', 'crop_border': 0, 'test_y_channel': False}
    assert calculate_metric(data, opt) == calculate_psnr_mean_var(shifted, gt)
    assert opt['type'] == 'calculate_psnr_mean_var'  # BasicSR copies the options
    ssim = calculate_metric(data, {'type': 'calculate_ssim_mean_var', 'crop_border': 4, 'test_y_channel': True})
    assert ssim == calculate_ssim_mean_var(shifted, gt, crop_border=4, test_y_channel=True)
    assert calculate_metric(data, {'type': 'calculate_psnr', 'crop_border': 0}) < calculate_metric(data, opt)
