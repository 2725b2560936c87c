"""FeMaSR + bottlenecks: tiny SR-stage trainings through the entry point (sinca, nearest), frozen parts, overfit."""
import re
from os import path as osp

import pytest
import torch
from helpers import (REPO, assert_resume_is_exact, entry_cmd, logged_values, make_tiny_femasr_workdir, read_train_log,
                     run_cmd)

TINY = osp.join(REPO, 'options', 'train', 'femasr', 'tiny')
FROZEN = ('quantize_group.', 'decoder_group.', 'after_quant_group.', 'out_conv.')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('femasr')
    prior = make_tiny_femasr_workdir(str(root))
    return root, torch.load(prior, map_location='cpu')['params']



def _check_frozen(ckpt, prior):
    sd = torch.load(ckpt, map_location='cpu')['params']
    frozen = [k for k in sd if k.startswith(FROZEN)]
    assert len(frozen) > 10 and all(torch.equal(sd[k], prior[k]) for k in frozen)
    assert not torch.equal(sd['before_quant_group.0.weight'], prior['before_quant_group.0.weight'])  # trained


def test_sinca_sr_stage(workdir):
    root, prior = workdir
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'x4_sinca.yml')), cwd=root)
    exp = root / 'experiments' / 'tiny_FeMaSR_x4_sinca'
    log = read_train_log(exp)
    for key in ('l_feat_match', 'l_feat_lq', 'l_pix', 'l_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'):
        assert len(logged_values(log, key)) == 10, key
    assert re.search(r'# psnr: [\d.]+', log) and re.search(r'# lpips: [\d.]+', log)
    assert 'New best lpips' in log and (exp / 'models' / 'net_g_best.pth').is_file()
    assert (exp / 'models' / 'net_d_10.pth').is_file()
    _check_frozen(exp / 'models' / 'net_g_10.pth', prior)
    # the bottleneck is the only new module: every other key came from (or has the shape of) the HQ prior's tree
    sd = torch.load(exp / 'models' / 'net_g_10.pth', map_location='cpu')['params']
    assert any(k.startswith('bottleneck.transformer.layers.1.attn.to_k') for k in sd)


def test_nearest_retrain(workdir):
    root, prior = workdir
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'x4_retrain.yml')), cwd=root)
    exp = root / 'experiments' / 'tiny_FeMaSR_x4_retrain'
    log = read_train_log(exp)
    assert len(logged_values(log, 'l_feat_lq')) == 10 and 'l_feat_match' not in log
    _check_frozen(exp / 'models' / 'net_g_10.pth', prior)
    sd = torch.load(exp / 'models' / 'net_g_10.pth', map_location='cpu')['params']
    assert not any(k.startswith('bottleneck.') for k in sd)


def test_sinca_overfits_a_fixed_batch(workdir):
    """Two whole LR/HR pairs, no crops or flips, batch 2: the same batch every iteration."""
    root, _ = workdir
    two = root / 'datasets' / 'two'
    for sub in ('HR', 'LR_X4'):
        (two / sub).mkdir(parents=True, exist_ok=True)
        for name in ('chelsea.png', 'coffee.png'):
            (two / sub / name).write_bytes((root / 'datasets' / 'tiny_sr' / sub / name).read_bytes())
    args = ['-opt', osp.join(TINY, 'x4_sinca.yml'), '--force_yml', 'name=tiny_femasr_overfit', 'train:total_iter=40',
            'datasets:train:dataroot_gt=datasets/two/HR', 'datasets:train:dataroot_lq=datasets/two/LR_X4',
            'datasets:train:gt_size=~', 'datasets:train:use_hflip=false', 'datasets:train:use_rot=false',
            'val:val_freq=1000', 'logger:save_checkpoint_freq=1000']
    run_cmd(entry_cmd('train', *args), cwd=root)
    match = logged_values(read_train_log(root / 'experiments' / 'tiny_femasr_overfit'), 'l_feat_match')
    assert len(match) == 40
    start, end = sum(match[:3]) / 3, sum(match[-3:]) / 3
    assert end < 0.3 * start, (start, end)


def test_test_pipeline_tiled(workdir):
    root, _ = workdir
    if not (root / 'experiments' / 'tiny_FeMaSR_x4_sinca' / 'models' / 'net_g_best.pth').is_file():
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'x4_sinca.yml')), cwd=root)
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'femasr', 'tiny_test_x4_sinca.yml')), cwd=root)
    res = root / 'results' / 'tiny_test_FeMaSR_x4_sinca'
    images = sorted((res / 'visualization' / 'tiny_sr_test').glob('*.png'))
    assert len(images) == 4
    import cv2
    assert cv2.imread(str(images[0])).shape == (160, 160, 3)  # whole image back from 40x40 LR tiles
    log = ''.join(p.read_text() for p in res.glob('test_*.log'))
    assert re.search(r'# psnr: [\d.]+', log) and re.search(r'# lpips: [\d.]+', log)


@pytest.mark.parametrize('stage', ['x4_retrain', 'x4_sinca'])
def test_resume_is_exact(stage, workdir):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run."""
    assert_resume_is_exact(workdir[0], osp.join(TINY, f'{stage}.yml'))
