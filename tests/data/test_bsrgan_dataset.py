"""BSRGAN degradation, SR datasets and the pair-generation script."""
import os
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO

from basicsr_sinca.data.bsrgan_dataset import BSRGANTrainDataset, PairedResizeCropDataset
from basicsr_sinca.data.bsrgan_degradation import degradation_bsrgan
from basicsr_sinca.utils.sample_data import load_photo

sys.path.insert(0, osp.join(REPO, 'scripts'))
import generate_bsrgan_pairs  # noqa: E402


@pytest.fixture(scope='module')
def photo():
    return load_photo('coffee')[:200, :300].astype(np.float32) / 255.0


@pytest.mark.parametrize('sf', [2, 4])
def test_degradation_shapes_range_and_seed(photo, sf):
    results = [degradation_bsrgan(photo, sf, np.random.default_rng(s)) for s in range(8)]
    for lq, hq in results:
        assert hq.shape == (200, 300, 3) and lq.shape == (200 // sf, 300 // sf, 3)
        assert lq.dtype == np.float32 and lq.min() >= 0 and lq.max() <= 1
        # degraded, but still the same picture: bicubic-downscaled GT is correlated with LQ
        ref = cv2.resize(hq, (300 // sf, 200 // sf), interpolation=cv2.INTER_AREA)
        assert np.corrcoef(ref.ravel(), lq.ravel())[0, 1] > 0.5
    again, _ = degradation_bsrgan(photo, sf, np.random.default_rng(3))
    assert np.array_equal(again, results[3][0])
    assert len({lq.tobytes() for lq, _ in results}) == 8  # different seeds, different degradations
    assert np.array_equal(results[0][1], photo)  # HR untouched (already a multiple of sf)


def test_degradation_modcrop_and_too_small(photo):
    lq, hq = degradation_bsrgan(photo[:101, :203], 4, np.random.default_rng(0))
    assert hq.shape == (100, 200, 3) and lq.shape == (25, 50, 3)
    with pytest.raises(ValueError, match='too small for scale 4'):
        degradation_bsrgan(photo[:7, :40], 4)


@pytest.fixture(scope='module')
def hr_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('hr')
    for name in ('coffee', 'chelsea', 'rocket'):
        cv2.imwrite(str(root / f'{name}.png'), load_photo(name)[:180, :240])
    return str(root)


def test_bsrgan_train_dataset(hr_folder):
    opt = dict(name='hr', phase='train', dataroot_gt=hr_folder, io_backend={'type': 'disk'}, gt_size=96, scale=4,
               use_resize_crop=True, use_hflip=True, use_rot=True, seed=11)
    ds = BSRGANTrainDataset(opt)
    a, b = ds[1], BSRGANTrainDataset(opt)[1]
    assert a['gt'].shape == (3, 96, 96) and a['lq'].shape == (3, 24, 24)
    assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
    assert not torch.equal(BSRGANTrainDataset(dict(opt, seed=12))[1]['lq'], a['lq'])
    with pytest.raises(ValueError, match=r'gt_size: 90 is not a multiple of scale 4'):
        BSRGANTrainDataset(dict(opt, gt_size=90))
    with pytest.raises(ValueError, match='smaller than gt_size 512'):
        BSRGANTrainDataset(dict(opt, gt_size=512))[0]


def test_generator_script_reproducible_and_robust(hr_folder, tmp_path, capsys):
    src = tmp_path / 'src'
    src.mkdir()
    for f in os.listdir(hr_folder):
        (src / f).write_bytes(open(osp.join(hr_folder, f), 'rb').read())
    (src / 'broken.png').write_bytes(b'\x89PNG broken')
    (src / 'tiny.png').write_bytes(cv2.imencode('.png', np.zeros((3, 3, 3), np.uint8))[1].tobytes())
    out1, out2 = tmp_path / 'a', tmp_path / 'b'
    assert generate_bsrgan_pairs.main(['-i', str(src), '-o', str(out1), '--scale', '2', '--crop_size', '128',
                                       '--step', '112']) == 1  # two inputs failed
    printed = capsys.readouterr().out
    assert 'broken.png: not a readable image' in printed and 'tiny.png' in printed and 'too small' in printed
    names = sorted(os.listdir(out1 / 'LR_X2'))
    assert names == sorted(os.listdir(out1 / 'HR')) and len(names) == 3 * 2 * 2  # 2x2 sub-images per photo
    # a second run in another order/folder gives identical pairs (seeded by name, not by position)
    os.remove(src / 'chelsea.png')
    assert generate_bsrgan_pairs.main(['-i', str(src), '-o', str(out2), '--scale', '2', '--crop_size', '128',
                                       '--step', '112']) == 1
    for name in os.listdir(out2 / 'LR_X2'):
        assert (out1 / 'LR_X2' / name).read_bytes() == (out2 / 'LR_X2' / name).read_bytes()
    lr = cv2.imread(str(out1 / 'LR_X2' / names[0]))
    hr = cv2.imread(str(out1 / 'HR' / names[0]))
    assert hr.shape == (128, 128, 3) and lr.shape == (64, 64, 3)


def test_paired_resize_crop_dataset(hr_folder, tmp_path):
    assert generate_bsrgan_pairs.main(['-i', hr_folder, '-o', str(tmp_path), '--scale', '4']) == 0
    opt = dict(name='pairs', phase='train', dataroot_gt=str(tmp_path / 'HR'), dataroot_lq=str(tmp_path / 'LR_X4'),
               io_backend={'type': 'disk'}, gt_size=64, scale=4, use_resize_crop=True, use_hflip=True, use_rot=True,
               seed=5)
    item = PairedResizeCropDataset(opt)[0]
    assert item['gt'].shape == (3, 64, 64) and item['lq'].shape == (3, 16, 16)
    assert torch.equal(item['lq'], PairedResizeCropDataset(opt)[0]['lq'])
    val = PairedResizeCropDataset(dict(opt, phase='val'))[2]
    assert val['gt'].shape == (3, 180, 240) and val['lq'].shape == (3, 45, 60)
    os.remove(tmp_path / 'LR_X4' / 'rocket.png')
    with pytest.raises(ValueError, match=r'datasets\.train\(pairs\)'):
        PairedResizeCropDataset(opt)


def test_two_indices_of_one_image_get_their_own_degradation(tmp_path):
    """BSRGAN pairs: one image under two names, whole-image crops, no flips: same GT, different LQ under one seed,
    and the same LQ per index across dataset instances."""
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name), load_photo('coffee')[:96, :96])
    opt = dict(name='hr', phase='train', dataroot_gt=str(tmp_path), io_backend={'type': 'disk'}, gt_size=96, scale=4,
               use_hflip=False, use_rot=False, seed=11)
    ds, again = BSRGANTrainDataset(opt), BSRGANTrainDataset(opt)
    assert torch.equal(ds[0]['gt'], ds[1]['gt'])
    assert not torch.equal(ds[0]['lq'], ds[1]['lq'])
    assert torch.equal(ds[0]['lq'], again[0]['lq']) and torch.equal(ds[1]['lq'], again[1]['lq'])


def test_milder_settings_degrade_less_and_bad_ranges_are_refused(photo, hr_folder):
    """The keyword ranges reach the pipeline: without noise, JPEG, blur or extra downsampling the LQ is only the
    final resize; BSRGAN's defaults are kept when they are not given; a bad range is one error naming the key."""

    def error(lq, hq):
        return float(np.mean((cv2.resize(lq, hq.shape[1::-1], interpolation=cv2.INTER_CUBIC) - hq)**2))

    clean = dict(blur_scale=0.0, down_range=(1, 1), noise_range=(0, 0), jpeg_range=(100, 100))
    default_err = np.mean([error(*degradation_bsrgan(photo, 2, np.random.default_rng(s))) for s in range(6)])
    clean_err = np.mean([error(*degradation_bsrgan(photo, 2, np.random.default_rng(s), **clean)) for s in range(6)])
    assert clean_err < default_err / 3
    explicit = dict(blur_scale=1.0, down_range=(1, 4), noise_range=(2, 25), jpeg_range=(30, 95))
    for s in range(3):
        a = degradation_bsrgan(photo, 2, np.random.default_rng(s))[0]
        assert np.array_equal(a, degradation_bsrgan(photo, 2, np.random.default_rng(s), **explicit)[0])
    opt = dict(name='hr', phase='train', dataroot_gt=hr_folder, io_backend={'type': 'disk'}, gt_size=64, scale=2,
               seed=1)
    mild = BSRGANTrainDataset(dict(opt, **{k: list(v) if isinstance(v, tuple) else v for k, v in clean.items()}))
    harsh = BSRGANTrainDataset(opt)
    assert mild[0]['lq'].shape == harsh[0]['lq'].shape == (3, 32, 32)
    assert not torch.equal(mild[0]['lq'], harsh[0]['lq'])
    for key, value, expected in (('noise_range', [5, 2], 'noise_range: expected'), ('jpeg_range', [30, 101], 'jpeg'),
                                 ('noise_range', [1.5, 3], 'integers'), ('down_range', [0.5, 2], 'down_range'),
                                 ('blur_scale', -1, 'blur_scale: expected a number >= 0')):
        with pytest.raises(ValueError, match=rf'datasets\.train\(hr\)\.{key}: .*'):
            BSRGANTrainDataset(dict(opt, **{key: value}))
        with pytest.raises(ValueError, match=expected):
            BSRGANTrainDataset(dict(opt, **{key: value}))
