"""DAEFR's three stages at toy size through the entry point (HQ / LQ codebooks, association, final stage with
`retrain` and `sinca`), frozen parts, overfitting, testing, face inference, the analysis scripts and Lightning
checkpoints on the tiny results."""
import json
import os
import sys
from os import path as osp

import pytest
import torch
from helpers import (REPO, assert_face_stage_overfits, assert_resume_is_exact, entry_cmd, logged_values, read_train_log,
                     run_cmd)

TINY = osp.join(REPO, 'options', 'train', 'daefr', 'tiny')
STAGES = ('hq_codebook', 'lq_codebook', 'association', 'final_sinca', 'final_retrain')
EXPERIMENTS = {'hq_codebook': 'tiny_DAEFR_HQ_codebook', 'lq_codebook': 'tiny_DAEFR_LQ_codebook',
               'association': 'tiny_DAEFR_association', 'final_sinca': 'tiny_DAEFR_final_sinca',
               'final_retrain': 'tiny_DAEFR_final_retrain'}

sys.path.insert(0, osp.join(REPO, 'scripts'))


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    from basicsr_sinca.utils.sample_data import write_face_images
    root = tmp_path_factory.mktemp('daefr')
    write_face_images(str(root / 'datasets' / 'tiny_faces'), 64, 6, 0)
    for stage in STAGES:
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, f'{stage}.yml')), cwd=root)
    return root


def _exp(root, stage):
    return root / 'experiments' / EXPERIMENTS[stage]


def _params(path, key='params'):
    return torch.load(path, map_location='cpu')[key]


def test_every_stage_logs_its_losses(chain):
    expected = {
        'hq_codebook': ['l_codebook', 'l_pix', 'l_percep', 'perplexity'],
        'lq_codebook': ['l_codebook', 'l_pix', 'l_percep', 'perplexity'],
        'association': ['l_codebook_hq', 'l_pix_hq', 'l_codebook_lq', 'l_pix_lq', 'l_association', 'logit_scale',
                        'perplexity_hq', 'perplexity_lq'],
        'final_sinca': ['l_feat_match', 'l_feat_lq'],
        'final_retrain': ['l_ce', 'l_feat_lq', 'code_acc'],
    }
    for stage, keys in expected.items():
        log = read_train_log(_exp(chain, stage))
        for key in keys:
            assert len(logged_values(log, key)) == 6, (stage, key)
        assert '# psnr:' in log, stage
    # the GAN terms start after net_d_start_iter (3 for the codebooks, 2 for the association)
    assert len(logged_values(read_train_log(_exp(chain, 'hq_codebook')), 'l_g_gan')) == 3
    assert len(logged_values(read_train_log(_exp(chain, 'association')), 'l_g_gan_lq')) == 4
    assert 'l_feat_match' not in read_train_log(_exp(chain, 'final_retrain'))
    assert 'l_ce' not in read_train_log(_exp(chain, 'final_sinca'))


def test_final_stage_starts_from_the_stage_files_and_keeps_frozen_parts(chain):
    hq = _params(_exp(chain, 'hq_codebook') / 'models' / 'net_g_latest.pth')
    assoc = _params(_exp(chain, 'association') / 'models' / 'net_g_latest.pth')
    for key in ('params', 'params_ema'):
        final = _params(_exp(chain, 'final_sinca') / 'models' / 'net_g_latest.pth', key)
        pairs = [('vqvae.Fixed_encoder.', hq, 'encoder.'), ('vqvae.Fixed_quantize.', hq, 'quantize.'),
                 ('vqvae.decoder.', hq, 'decoder.'), ('vqvae.post_quant_conv.', hq, 'post_quant_conv.'),
                 ('vqvae.HQ_quantize.', assoc, 'vqvae.quantize.'), ('vqvae.LQ_quantize.', assoc, 'vqvae_LQ.quantize.')]
        for ours, source, theirs in pairs:  # frozen in the final stage: bit-identical to the files
            keys = [k for k in final if k.startswith(ours)]
            assert keys and all(torch.equal(final[k], source[theirs + k[len(ours):]]) for k in keys), (key, ours)
    final = _params(_exp(chain, 'final_sinca') / 'models' / 'net_g_latest.pth')
    trained = [('vqvae.encoder.conv_in.weight', assoc['vqvae_LQ.encoder.conv_in.weight']),
               ('vqvae.HQ_encoder.conv_in.weight', assoc['vqvae.encoder.conv_in.weight'])]
    assert all(not torch.equal(final[k], v) for k, v in trained)  # started from the association, then trained
    assert any(k.startswith('bottleneck.transformer.') for k in final)
    retrain = _params(_exp(chain, 'final_retrain') / 'models' / 'net_g_latest.pth')
    assert 'bottleneck.position_emb' in retrain


def test_final_sinca_overfits_a_fixed_batch(chain):
    assert_face_stage_overfits(chain, osp.join(TINY, 'final_sinca.yml'), 'tiny_daefr_overfit')


def test_test_pipeline_and_face_inference(chain, tmp_path, capsys):
    import cv2

    import inference_face
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'daefr', 'tiny_test_sinca.yml')), cwd=chain)
    res = chain / 'results' / 'tiny_test_DAEFR_sinca'
    assert len(list((res / 'visualization' / 'tiny_faces_test').glob('*.png'))) == 6
    log = ''.join(p.read_text() for p in res.glob('test_*.log'))
    assert '# psnr:' in log and '# lpips:' in log
    opt, ckpt = osp.join(TINY, 'final_sinca.yml'), str(_exp(chain, 'final_sinca') / 'models' / 'net_g_latest.pth')
    faces = chain / 'datasets' / 'tiny_faces'
    assert inference_face.main(['-i', str(faces), '-o', str(tmp_path / 'out'), '--has_aligned', '--opt', opt,
                                '--model_path', ckpt]) == 0
    written = sorted(os.listdir(tmp_path / 'out' / 'restored_faces'))
    assert len(written) == 6 and cv2.imread(str(tmp_path / 'out' / 'restored_faces' / written[0])).shape == (64, 64, 3)
    assert inference_face.main(['-i', str(faces), '-o', str(tmp_path / 'o2'), '--has_aligned', '--opt', opt,
                                '--model_path', ckpt, '-w', '0.5']) == 2
    assert '-w/--fidelity_weight: SinCADAEFR has no fidelity weight' in capsys.readouterr().err


def _run_script(script, chain, stage, out, *extra):
    cwd = os.getcwd()
    os.chdir(chain)
    try:
        return script.main(['--opt', osp.join(TINY, f'{stage}.yml'), '--model_path',
                            f'experiments/{EXPERIMENTS[stage]}/models/net_g_latest.pth', '-o', str(out), *extra])
    finally:
        os.chdir(cwd)


def test_analysis_scripts_on_tiny_daefr(chain, tmp_path):
    """The prior is inside the network (no file); the scripts know nothing of DAEFR."""
    import analyze_attention
    import analyze_codebook
    import restore_with_gt_indices
    assert _run_script(analyze_codebook, chain, 'final_retrain', tmp_path / 'codes') == 0
    (stats, ) = json.loads((tmp_path / 'codes' / 'codebook.json').read_text())['codebooks']
    assert stats['bottleneck'] == 'index' and stats['size'] == 64 and 0 <= stats['accuracy'] <= 1
    assert _run_script(analyze_attention, chain, 'final_sinca', tmp_path / 'attn') == 0
    (layers, ) = json.loads((tmp_path / 'attn' / 'attention.json').read_text())['codebooks']
    assert len(layers['layers']) == 2 and layers['latent_hw'] == [16, 16]
    assert _run_script(restore_with_gt_indices, chain, 'final_sinca', tmp_path / 'oracle') == 0
    result = json.loads((tmp_path / 'oracle' / 'gt_indices.json').read_text())
    assert result['images'] == 6 and result['bottlenecks'] == ['sinca']


def test_lightning_checkpoints_load_and_convert(chain, tmp_path):
    """A stage-1 file in the release's Lightning layout (vqvae. prefix, loss.* keys, pickled trainer objects)
    initialises the final network exactly like the BasicSR file; the converter writes the BasicSR file."""
    import convert_lightning_ckpt
    from fake_lightning import ModelCheckpoint

    from basicsr_sinca.archs.daefr_arch import SinCADAEFR
    from basicsr_sinca.utils.options import load_options
    hq_path = _exp(chain, 'hq_codebook') / 'models' / 'net_g_latest.pth'
    hq = _params(hq_path)
    lightning = tmp_path / 'HQ_codebook.ckpt'
    torch.save({'pytorch-lightning_version': '1.0.8', 'global_step': 6, 'callbacks': {ModelCheckpoint: {}},
                'state_dict': dict({f'vqvae.{k}': v for k, v in hq.items()},
                                   **{'loss.discriminator.main.0.weight': torch.zeros(1)})}, lightning)
    ddconfig = load_options(osp.join(TINY, 'final_sinca.yml'))['network_g']['ddconfig']
    torch.manual_seed(0)
    from_lightning = SinCADAEFR('nearest', ddconfig, hq_codebook_path=str(lightning)).state_dict()
    torch.manual_seed(0)
    from_basicsr = SinCADAEFR('nearest', ddconfig, hq_codebook_path=str(hq_path)).state_dict()
    assert all(torch.equal(from_lightning[k], v) for k, v in from_basicsr.items())
    cwd = os.getcwd()
    os.chdir(chain)
    try:
        rc = convert_lightning_ckpt.main([str(lightning), str(tmp_path / 'hq.pth'), '--opt',
                                          osp.join(TINY, 'hq_codebook.yml')])
        assert convert_lightning_ckpt.main([str(lightning), str(lightning), '--arch', 'VQVAEGAN']) == 2
    finally:
        os.chdir(cwd)
    assert rc == 0
    converted = _params(tmp_path / 'hq.pth')
    assert set(converted) == set(hq) and all(torch.equal(converted[k], v) for k, v in hq.items())


@pytest.mark.parametrize('stage', STAGES)
def test_resume_is_exact(stage, chain):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run."""
    assert_resume_is_exact(chain, osp.join(TINY, f'{stage}.yml'))
