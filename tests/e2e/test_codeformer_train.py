"""CodeFormer + bottlenecks: tiny stage-2 / stage-3 trainings through the entry point, frozen parts, round trip."""
import re
from os import path as osp

import pytest
import torch
from helpers import (REPO, assert_face_stage_overfits, assert_resume_is_exact, entry_cmd, logged_values,
                     make_tiny_codeformer_workdir, read_train_log, run_cmd)

from basicsr_sinca.utils.inference import build_net_from_options

TINY = osp.join(REPO, 'options', 'train', 'codeformer', 'tiny')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('codeformer')
    prior = make_tiny_codeformer_workdir(str(root))
    return root, torch.load(prior, map_location='cpu')['params_ema']



def _assert_frozen_equal(ckpt_path, prior):
    for param_key in ('params', 'params_ema'):
        sd = torch.load(ckpt_path, map_location='cpu')[param_key]
        frozen = [k for k in prior if k.startswith(('quantize.', 'generator.'))]
        assert frozen and all(torch.equal(sd[k], prior[k]) for k in frozen), param_key
        assert not torch.equal(sd['encoder.blocks.0.weight'], prior['encoder.blocks.0.weight'])  # trained


@pytest.fixture(scope='module')
def stage2_sinca(workdir):
    root, prior = workdir
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'stage2_sinca.yml')), cwd=root)
    return root / 'experiments' / 'tiny_CodeFormer_stage2_sinca'


def test_stage2_sinca(stage2_sinca, workdir):
    root, prior = workdir
    log = read_train_log(stage2_sinca)
    assert len(logged_values(log, 'l_feat_match')) == 20 and len(logged_values(log, 'l_feat_lq')) == 20
    assert 'l_ce' not in log
    for metric in ('psnr', 'ssim', 'lpips'):
        assert re.search(rf'# {metric}: [\d.]+', log), metric
    assert len(list((stage2_sinca / 'visualization').rglob('*.png'))) >= 6
    _assert_frozen_equal(stage2_sinca / 'models' / 'net_g_latest.pth', prior)


def test_checkpoint_round_trip(stage2_sinca, tmp_path):
    opt_file = osp.join(TINY, 'stage2_sinca.yml')
    net = build_net_from_options(opt_file).eval()
    sd = torch.load(stage2_sinca / 'models' / 'net_g_latest.pth', map_location='cpu')['params_ema']
    net.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net(x, w=0.5).image
    from basicsr_sinca.utils.file_io import atomic_torch_save
    atomic_torch_save({'params_ema': net.state_dict()}, str(tmp_path / 'copy.pth'))
    net2 = build_net_from_options(opt_file).eval()
    net2.load_state_dict(torch.load(tmp_path / 'copy.pth', map_location='cpu')['params_ema'], strict=True)
    with torch.no_grad():
        assert torch.equal(net2(x, w=0.5).image, out)


def test_stage2_index_retrain(workdir):
    root, prior = workdir
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'stage2_retrain.yml')), cwd=root)
    exp = root / 'experiments' / 'tiny_CodeFormer_stage2_retrain'
    log = read_train_log(exp)
    assert len(logged_values(log, 'l_ce')) == 20 and len(logged_values(log, 'code_acc')) == 20
    assert 'l_feat_match' not in log and len(logged_values(log, 'l_feat_lq')) == 20
    _assert_frozen_equal(exp / 'models' / 'net_g_latest.pth', prior)
    sd = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu')['params']
    assert 'bottleneck.position_emb' in sd and 'bottleneck.idx_pred_layer.1.weight' in sd


def test_stage3_from_stage2(stage2_sinca, workdir):
    root, prior = workdir
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'stage3_sinca.yml')), cwd=root)
    exp = root / 'experiments' / 'tiny_CodeFormer_stage3_sinca'
    log = read_train_log(exp)
    # schedule [[4, 1.0, 1], [8, 0.0, 0], [~, 1.3, 2]]: full passes at 1-4, code-only 5-8, full at 10 and 12
    ws = logged_values(log, r'\bw')
    assert ws == [1.0] * 4 + [0.0] * 4 + [1.3] * 4
    assert len(logged_values(log, 'l_g_pix')) == 6 and len(logged_values(log, 'l_g_percep')) == 6
    # GAN after iteration 2
    assert len(logged_values(log, 'l_g_gan')) == 4 and len(logged_values(log, 'l_d_real')) == 4
    assert all(0 <= d <= 0.1 + 1e-9 for d in logged_values(log, 'd_weight'))
    assert (exp / 'models' / 'net_d_latest.pth').is_file()
    _assert_frozen_equal(exp / 'models' / 'net_g_latest.pth', prior)
    assert '# psnr:' in log


def test_stage2_sinca_overfits_a_fixed_batch(workdir):
    root, _ = workdir
    assert_face_stage_overfits(root, osp.join(TINY, 'stage2_sinca.yml'), 'tiny_overfit')


def test_test_pipeline_on_stage2_result(stage2_sinca, workdir):
    root, _ = workdir
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'codeformer', 'tiny_test_sinca.yml')), cwd=root)
    res = root / 'results' / 'tiny_test_CodeFormer_sinca'
    assert len(list((res / 'visualization' / 'tiny_faces_test').glob('*.png'))) == 6
    log = ''.join(p.read_text() for p in res.glob('test_*.log'))
    assert re.search(r'# psnr: [\d.]+', log) and re.search(r'# lpips: [\d.]+', log)


@pytest.mark.parametrize('stage', ['stage2_retrain', 'stage2_sinca', 'stage3_sinca'])
def test_resume_is_exact(stage, workdir, stage2_sinca):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run
    (random degradations included: the training state carries the random generators)."""
    assert_resume_is_exact(workdir[0], osp.join(TINY, f'{stage}.yml'))
