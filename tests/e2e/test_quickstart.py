"""The README's main job: the quickstart end to end, run from the built wheel (no source checkout on the path), as
after a plain ``pip install``: ``--fast`` for the blind task, a short SR run, and ``--train_prior``.

The metrics of ``results.json`` are recomputed by hand (NumPy, not BasicSR) from the images the run writes, so a
table measured against the wrong reference, channel or border fails here."""
import json
import math
import sys

import cv2
import numpy as np
import pytest
import torch

from helpers import run_cmd, wheel_env

BOTTLENECKS = ['nearest', 'index', 'sa', 'ca', 'sinca']


def psnr_by_hand(img, ref, crop_border=0, y_channel=False):
    """PSNR of two HWC BGR uint8 images, written from the definitions (BT.601 luma as MATLAB's rgb2ycbcr)."""
    img, ref = img.astype(np.float64), ref.astype(np.float64)
    if crop_border:
        img, ref = img[crop_border:-crop_border, crop_border:-crop_border], ref[crop_border:-crop_border,
                                                                                crop_border:-crop_border]
    if y_channel:
        def luma(x):
            b, g, r = x[..., 0] / 255, x[..., 1] / 255, x[..., 2] / 255
            return 16 + 65.481 * r + 128.553 * g + 24.966 * b
        img, ref = luma(img), luma(ref)
    mse = np.mean((img - ref)**2)
    return 10 * np.log10(255.0**2 / mse)


def check_rows_by_hand(out, res):
    """Every row with images: its PSNR in results.json equals the hand-computed PSNR of those images against the
    saved GT crops (first seed's run for the bottlenecks)."""
    metric = res['metric']
    gt_dir = out / 'images' / 'gt'
    names = sorted(p.name for p in gt_dir.glob('*.png'))
    assert len(names) == res['split']['eval_crops']
    gts = [cv2.imread(str(gt_dir / n)) for n in names]
    # the saved GT crops are the held-out files themselves
    for n, g in zip(names, gts):
        assert np.array_equal(g, cv2.imread(str(out / 'datasets' / 'quickstart' / 'eval_gt' / n)))
    rows = [(label, row) for label, row in res['references'].items() if label != 'GT']
    rows += [(f"{r['bottleneck']} s{r['seed']}", r) for r in res['runs'] if 'images' in r]
    assert len(rows) == 2 + len(res['bottlenecks'])
    for label, row in rows:
        imgs = [cv2.imread(str(out / row['images'] / n)) for n in names]
        expected = np.mean([psnr_by_hand(i, g, metric['crop_border'], metric['y_channel']) for i, g in zip(imgs, gts)])
        assert row["psnr"] == pytest.approx(expected, abs=1e-4), label  # BasicSR converts to Y in float32


def test_quickstart_fast_blind(tmp_path, wheel_site):
    out = tmp_path / 'qs'
    proc = run_cmd([sys.executable, '-m', 'basicsr_sinca.quickstart', '--fast', '--out', out], cwd=tmp_path,
                   timeout=900, env=wheel_env(wheel_site[0]))
    res = json.loads((out / 'results.json').read_text())
    assert res['task'] == 'blind' and res['seeds'] == [0] and res['metric'] == {'crop_border': 0, 'y_channel': False}
    assert list(res['summary']) == BOTTLENECKS
    for name in BOTTLENECKS:
        row = res['summary'][name]
        for metric in ('psnr', 'ssim', 'psnr_to_prior', 'latent_mse') + (() if name == 'index' else ('niqe', )):
            assert math.isfinite(row[metric]['mean']), (name, metric)
        assert (row.get('index_accuracy') is not None) == (name in ('nearest', 'index'))
        if row.get('index_accuracy'):
            assert 0 <= row['index_accuracy']['mean'] <= 1 and 0 < row['codebook_usage']['mean'] <= 1
    assert res['split']['eval_photos'] and set(res['split']['train_photos']).isdisjoint({'stereo_motorcycle'})
    check_rows_by_hand(out, res)
    # the shipped prior, checksum-verified, reconstructs the held-out crops at >= 24 dB
    assert res['prior']['trained_here'] is False and 'SHA-256' in res['prior']['source']
    assert res['references']['prior on GT (upper bound)']['psnr'] >= 24
    # the prior's codes restore even at --fast: the nearest-code row is above the degraded input
    assert res['summary']['nearest']['psnr']['mean'] > res['references']['LQ input']['psnr']
    # missing values say why
    assert res['summary']['index']['niqe'] is None and 'index transformer' in res['empty_columns']['niqe']
    assert math.isfinite(res['references']['GT']['niqe']) and math.isfinite(res['references']['LQ input']['niqe'])
    table = (out / 'results.md').read_text()
    for name in BOTTLENECKS:
        assert f'| {name} |' in table
    assert table in proc.stdout and 'One seed: no statement about seed noise' in table
    for png in ('grid.png', 'attention_split.png', 'attention_maps.png', 'code_stats.png'):
        assert (out / png).stat().st_size > 1000, png
    # every training went through the entry point and left its experiment folder and log
    assert len(list((out / 'logs').glob('*.log'))) == 5
    assert all((out / 'experiments' / f'quickstart_blind_{b}_s0' / 'models' / 'net_g_latest.pth').is_file()
               for b in BOTTLENECKS)
    # the printed command names the best row's option file and checkpoint
    best = max(BOTTLENECKS, key=lambda b: res['summary'][b]['psnr']['mean'])
    assert res['best']['bottleneck'] == best and f'quickstart_blind_{best}_s0' in res['best']['command']
    assert res['best']['command'] in proc.stdout
    # ... and it restores a user's own image (a larger photo crop, resized to the model's aligned-face input)
    mine = tmp_path / 'mine'
    mine.mkdir()
    cv2.imwrite(str(mine / 'photo.png'), cv2.imread(str(out / 'datasets' / 'quickstart' / 'eval_gt_192' /
                                                         'motorcycle_00.png')))
    command = res['best']['command'].replace('YOUR_IMAGES', str(mine)).split()
    assert command[:3] == ['python', '-m', 'basicsr_sinca.restore']
    run_cmd([sys.executable] + command[1:], cwd=tmp_path, timeout=300, env=wheel_env(wheel_site[0]))
    restored = list((out / 'restored_yours').rglob('photo.png'))
    assert len(restored) == 1 and cv2.imread(str(restored[0])).shape == (48, 48, 3)


def test_quickstart_sr_short(tmp_path, wheel_site):
    """--task sr with two bottlenecks and a short schedule: Y-channel metrics with the border cropped, the bicubic
    row, the shipped SR prior."""
    out = tmp_path / 'qs_sr'
    run_cmd([sys.executable, '-m', 'basicsr_sinca.quickstart', '--task', 'sr', '--iters', '20', '--seeds', '1',
             '--bottlenecks', 'sinca', 'nearest', '--eval_crops', '6', '--niqe_crops', '1', '--out', out],
            cwd=tmp_path, timeout=600, env=wheel_env(wheel_site[0]))
    res = json.loads((out / 'results.json').read_text())
    assert res['task'] == 'sr' and res['metric'] == {'crop_border': 2, 'y_channel': True}
    assert res['bottlenecks'] == ['nearest', 'sinca'] and res['lq_row'] == 'bicubic x2'
    check_rows_by_hand(out, res)
    lq, gt = (cv2.imread(str(next((out / 'images' / row).glob('*.png')))) for row in ('lq', 'gt'))
    assert lq.shape == (24, 24, 3) and gt.shape == (48, 48, 3)  # the input is half the size; the row is its bicubic x2
    assert res['references']['prior on GT (upper bound)']['psnr'] >= 24


@pytest.mark.parametrize('task', ['blind', 'sr'])
def test_train_prior_matches_the_shipped_file(tmp_path, wheel_site, task):
    """--train_prior trains the prior from the packaged option file (two iterations here) and the run uses it; the
    shipped weights have exactly its keys and shapes."""
    from basicsr_sinca.quickstart import TASKS
    from basicsr_sinca.weights import shipped_weights
    out = tmp_path / 'qs'
    run_cmd([sys.executable, '-m', 'basicsr_sinca.quickstart', '--task', task, '--train_prior', '--prior_iters', '2',
             '--iters', '2', '--bottlenecks', 'nearest', '--eval_crops', '2', '--niqe_crops', '1', '--train_crops',
             '2', '--out', out], cwd=tmp_path, timeout=600, env=wheel_env(wheel_site[0]))
    res = json.loads((out / 'results.json').read_text())
    trained = out / 'experiments' / f'quickstart_{task}_prior' / 'models' / 'net_g_latest.pth'
    assert res['prior']['trained_here'] is True and res['prior']['path'] == str(trained)
    fresh = torch.load(trained, map_location='cpu', weights_only=True)['params_ema']
    shipped = torch.load(shipped_weights(TASKS[task]['shipped_prior']), map_location='cpu',
                         weights_only=True)['params_ema']
    assert {k: tuple(v.shape) for k, v in fresh.items()} == {k: tuple(v.shape) for k, v in shipped.items()}
    assert all(v.dtype == torch.float32 for v in shipped.values())
