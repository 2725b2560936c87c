"""VQFR v1 and v2 at toy size through the entry point: the VQGAN priors (v1 with its k-means schedule), the
restoration stages re-trained as released (feat2index / nearest, several discriminators, lazy R1, adaptive weights,
texture-branch losses, optimizer groups) and with SinCA; frozen parts, overfitting, the test pipeline with the
mean/variance-corrected metrics, and the official network reading a trained file."""
from os import path as osp

import pytest
import torch
from helpers import (REPO, assert_face_stage_overfits, assert_resume_is_exact, entry_cmd, logged_values, read_train_log,
                     run_cmd)

TINY = osp.join(REPO, 'options', 'train', 'vqfr', 'tiny')
STAGES = {'vqgan_v2': 'tiny_VQFR_VQGANv2', 'v2_retrain': 'tiny_VQFR_v2_retrain', 'v2_sinca': 'tiny_VQFR_v2_sinca',
          'vqgan_v1': 'tiny_VQFR_VQGANv1', 'v1_retrain': 'tiny_VQFR_v1_retrain', 'v1_sinca': 'tiny_VQFR_v1_sinca'}


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    from basicsr_sinca.utils.sample_data import write_face_images
    root = tmp_path_factory.mktemp('vqfr')
    write_face_images(str(root / 'datasets' / 'tiny_faces'), 64, 6, 0)
    for stage in STAGES:
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, f'{stage}.yml')), cwd=root)
    return root


def _log(root, stage):
    return read_train_log(root / 'experiments' / STAGES[stage])


def _params(root, stage, key='params'):
    path = root / 'experiments' / STAGES[stage] / 'models' / 'net_g_latest.pth'
    return torch.load(path, map_location='cpu', weights_only=True)[key]


def _same(a, b, prefixes):
    keys = [k for k in b if k.startswith(prefixes)]
    return len(keys) > 0 and all(torch.equal(a[k], b[k]) for k in keys)


def test_v2_retrain_losses_discriminators_and_groups(chain):
    log = _log(chain, 'v2_retrain')
    for key in ('l_feat_lq', 'l_ce', 'code_acc', 'l_pix', 'l_percep'):
        assert len(logged_values(log, key)) == 6, key
    for key in ('l_g_gan_global', 'l_g_gan_local', 'd_weight_local', 'l_d_real_global', 'l_d_real_local'):
        assert len(logged_values(log, key)) == 4, key  # both discriminators from iteration 3
    assert len(logged_values(log, 'l_d_r1_global')) == 2 and 'l_d_r1_local' not in log  # lazy R1 at 4 and 6
    assert 'lr:(1.000e-03,2.000e-04,)' in log  # encoder/bottleneck vs main branch/inpfeat_extraction
    prior, retrain = _params(chain, 'vqgan_v2'), _params(chain, 'v2_retrain')
    assert _same(retrain, prior, ('quantizer.', 'decoder.'))  # codebook and texture decoder: bit-identical
    assert not torch.equal(retrain['encoder.conv_in.weight'], prior['encoder.conv_in.weight'])
    assert 'bottleneck.feat2index.1.weight' in retrain and any(k.startswith('main_branch.') for k in retrain)


def test_v2_sinca_trains_only_encoder_and_bottleneck(chain):
    log = _log(chain, 'v2_sinca')
    assert len(logged_values(log, 'l_feat_match')) == 6 and 'l_pix' not in log and 'l_ce' not in log
    start = _params(chain, 'v2_retrain')
    for key in ('params', 'params_ema'):
        sinca = _params(chain, 'v2_sinca', key)
        assert _same(sinca, start, ('quantizer.', 'decoder.', 'main_branch.', 'inpfeat_extraction.')), key
    sinca = _params(chain, 'v2_sinca')
    assert not torch.equal(sinca['encoder.conv_in.weight'], start['encoder.conv_in.weight'])
    assert any(k.startswith('bottleneck.transformer.') for k in sinca)


def test_v2_sinca_overfits_a_fixed_batch(chain):
    assert_face_stage_overfits(chain, osp.join(TINY, 'v2_sinca.yml'), 'tiny_vqfr_overfit')


def test_v1_prior_kmeans_warmup(chain):
    log = _log(chain, 'vqgan_v1')
    codebook_loss = logged_values(log, 'l_codebook')
    assert len(codebook_loss) == 6 and codebook_loss[0] == 0 and all(v > 0 for v in codebook_loss[1:])  # warm-up
    assert len(logged_values(log, 'perplexity')) == 5  # nothing quantized during the warm-up


def test_v1_retrain_texture_and_main_branches(chain):
    log = _log(chain, 'v1_retrain')
    for key in ('l_feat_lq', 'l_percep', 'l_style', 'l_pixel_texture_dec', 'l_perceptual_texture_dec',
                'l_style_texture_dec', 'l_g_gan_global_texture', 'l_g_gan_local_texture', 'd_weight_local_texture'):
        assert len(logged_values(log, key)) == 6, key  # texture discriminators from the start
    for key in ('l_g_gan_global_main', 'l_g_gan_local_main', 'd_weight_local_main'):
        assert len(logged_values(log, key)) == 4, key
    assert 'l_pix:' not in log  # the main image's L1 weight is 0 upstream
    assert len(logged_values(log, 'l_d_r1_global_texture')) == 3 and len(logged_values(log, 'l_d_r1_global_main')) == 2
    prior, retrain = _params(chain, 'vqgan_v1'), _params(chain, 'v1_retrain')
    level = 'quantizer.quantize_dict.Level_4.'
    assert torch.equal(retrain[level + 'embedding.weight'], prior[level + 'embedding.weight'])  # fix_keys
    assert not torch.equal(retrain['decoder.conv_out.2.weight'], prior['decoder.conv_out.2.weight'])


def test_v1_sinca_keeps_both_decoders(chain):
    log = _log(chain, 'v1_sinca')
    assert len(logged_values(log, 'l_feat_match')) == 6
    start = _params(chain, 'v1_retrain')
    frozen = ('decoder.', 'main_decoder.', 'inpfeat_extraction.', 'quantizer.quantize_dict.Level_4.post_quant_conv.',
              'quantizer.quantize_dict.Level_4.embedding.')
    for key in ('params', 'params_ema'):
        assert _same(_params(chain, 'v1_sinca', key), start, frozen), key
    sinca = _params(chain, 'v1_sinca')
    for key in ('encoder.conv_in.weight', 'quantizer.quantize_dict.Level_4.quant_conv.weight'):
        assert not torch.equal(sinca[key], start[key]), key


def test_test_pipeline_metrics_and_official_network(chain):
    from basicsr_sinca.archs.vqfr_arch import SinCAVQFRv2, VQFRv2
    from basicsr_sinca.utils.options import load_options
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'vqfr', 'tiny_test_v2_sinca.yml')),
            cwd=chain)
    res = chain / 'results' / 'tiny_test_VQFR_v2_sinca'
    assert len(list((res / 'visualization' / 'tiny_faces_test').glob('*.png'))) == 6
    log = ''.join(p.read_text() for p in res.glob('test_*.log'))
    for metric in ('psnr', 'ssim', 'psnr_mean_var', 'ssim_mean_var', 'lpips'):
        assert f'# {metric}:' in log, metric
    # a file trained on the contract twin (bottleneck.feat2index.*) loads strictly into the official network,
    # which computes the same and writes the release's names (feat2index.* at the top level)
    net_opt = {k: v for k, v in load_options(osp.join(TINY, 'v2_retrain.yml'))['network_g'].items()
               if k not in ('type', 'bottleneck', 'fix_modules')}
    trained = _params(chain, 'v2_retrain')
    official, twin = VQFRv2(**net_opt).eval(), SinCAVQFRv2('feat2index', **net_opt).eval()
    official.load_state_dict(trained, strict=True)
    twin.load_state_dict(trained, strict=True)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(official(x, fidelity_ratio=0.3)['main_dec'], twin(x, fidelity_ratio=0.3).image)
    released = official.state_dict()
    assert 'feat2index.1.weight' in released and not any(k.startswith('bottleneck.') for k in released)
    assert SinCAVQFRv2('feat2index', **net_opt).load_state_dict(released, strict=True) is not None


@pytest.mark.parametrize('stage', list(STAGES))
def test_resume_is_exact(stage, chain):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run."""
    assert_resume_is_exact(chain, osp.join(TINY, f'{stage}.yml'))
