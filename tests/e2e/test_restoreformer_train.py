"""RestoreFormer at toy size through the entry point: the HQ dictionary, the re-train (style loss, adaptive GAN,
10x decoder/attention learning rate, own-code commitment) and SinCA with the default trainable set; frozen parts,
test pipeline, face inference and a released-layout Lightning file."""
import os
import sys
from os import path as osp

import pytest
import torch
from helpers import REPO, assert_resume_is_exact, entry_cmd, logged_values, read_train_log, run_cmd

TINY = osp.join(REPO, 'options', 'train', 'restoreformer', 'tiny')
sys.path.insert(0, osp.join(REPO, 'scripts'))


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    from basicsr_sinca.utils.sample_data import write_face_images
    root = tmp_path_factory.mktemp('restoreformer')
    write_face_images(str(root / 'datasets' / 'tiny_faces'), 64, 6, 0)
    for stage in ('hq_dictionary', 'retrain', 'sinca'):
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, f'{stage}.yml')), cwd=root)
    return root


def _params(root, exp, key='params'):
    return torch.load(root / 'experiments' / exp / 'models' / 'net_g_latest.pth', map_location='cpu')[key]


def test_retrain_losses_and_learning_rates(chain):
    log = read_train_log(chain / 'experiments' / 'tiny_RestoreFormer_retrain')
    for key in ('l_pix', 'l_percep', 'l_style', 'l_feat_lq'):  # l_feat_lq: the commitment to the selected codes
        assert len(logged_values(log, key)) == 6, key
    assert len(logged_values(log, 'l_g_gan')) == 4 and len(logged_values(log, 'd_weight')) == 4  # after iteration 2
    assert 'l_feat_match' not in log
    hq, retrain = _params(chain, 'tiny_RestoreFormer_HQ_dictionary'), _params(chain, 'tiny_RestoreFormer_retrain')
    assert torch.equal(retrain['quantize.embedding.weight'], hq['quantize.embedding.weight'])  # the frozen codebook
    assert not torch.equal(retrain['decoder.conv_out.weight'], hq['decoder.conv_out.weight'])


def test_sinca_default_trains_only_after_the_encoder_mid_block(chain):
    log = read_train_log(chain / 'experiments' / 'tiny_RestoreFormer_sinca')
    assert len(logged_values(log, 'l_feat_match')) == 6 and 'l_pix' not in log
    start = _params(chain, 'tiny_RestoreFormer_retrain')
    for key in ('params', 'params_ema'):
        sinca = _params(chain, 'tiny_RestoreFormer_sinca', key)
        frozen = [k for k in start if k.startswith(('quantize.', 'post_quant_conv.', 'decoder.', 'encoder.conv_in.',
                                                     'encoder.down.', 'encoder.mid.'))]
        assert len(frozen) > 50 and all(torch.equal(sinca[k], start[k]) for k in frozen), key
    sinca = _params(chain, 'tiny_RestoreFormer_sinca')
    assert not torch.equal(sinca['encoder.conv_out.weight'], start['encoder.conv_out.weight'])
    assert not torch.equal(sinca['quant_conv.weight'], start['quant_conv.weight'])


def test_test_pipeline_face_inference_and_lightning_file(chain, tmp_path):
    import inference_face
    from fake_lightning import ModelCheckpoint
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'restoreformer', 'tiny_test_sinca.yml')),
            cwd=chain)
    res = chain / 'results' / 'tiny_test_RestoreFormer_sinca'
    assert len(list((res / 'visualization' / 'tiny_faces_test').glob('*.png'))) == 6
    assert '# psnr:' in ''.join(p.read_text() for p in res.glob('test_*.log'))
    # the re-trained network saved in the release's Lightning layout restores faces through the face script
    retrain = _params(chain, 'tiny_RestoreFormer_retrain')
    ckpt = tmp_path / 'RestoreFormer.ckpt'
    torch.save({'pytorch-lightning_version': '1.0.8', 'global_step': 6, 'callbacks': {ModelCheckpoint: {}},
                'state_dict': dict({f'vqvae.{k}': v for k, v in retrain.items()},
                                   **{'loss.net_d_mouth.conv.weight': torch.zeros(1)})}, ckpt)
    rc = inference_face.main(['-i', str(chain / 'datasets' / 'tiny_faces'), '-o', str(tmp_path / 'out'),
                              '--has_aligned', '--opt', osp.join(TINY, 'retrain.yml'), '--model_path', str(ckpt)])
    assert rc == 0 and len(os.listdir(tmp_path / 'out' / 'restored_faces')) == 6


def test_full_retrain_loss_with_components_and_identity_runs(chain):
    """RestoreFormer's whole objective for one iteration through the entry point: the re-train's terms plus three
    facial-component discriminators on landmark boxes and a random ArcFace identity loss."""
    _write_landmarks(chain)
    run_cmd(entry_cmd('train', '-opt', osp.join(TINY, 'retrain_components.yml')), cwd=chain)
    log = read_train_log(chain / 'experiments' / 'tiny_RestoreFormer_retrain_components')
    for key in ('l_pix', 'l_percep', 'l_style', 'l_feat_lq', 'l_g_gan', 'l_identity', 'l_g_left_eye',
                'l_g_style_mouth', 'l_d_right_eye', 'l_d_real'):
        assert len(logged_values(log, key)) == 1, key
    models = chain / 'experiments' / 'tiny_RestoreFormer_retrain_components' / 'models'
    assert (models / 'net_d_component_1.pth').is_file() and (models / 'net_g_1.pth').is_file()


def _write_landmarks(root):
    """Component boxes (x, y, half size in the 512-px frame) of the six tiny faces for the dataset's component_path."""
    import json
    marks = {f'face_{i:03d}': {'left_eye': [200, 250, 24], 'right_eye': [312, 250, 24], 'mouth': [256, 380, 48]}
             for i in range(6)}
    (root / 'datasets' / 'tiny_landmarks.json').write_text(json.dumps(marks))


@pytest.mark.parametrize('stage', ['hq_dictionary', 'retrain', 'sinca', 'retrain_components'])
def test_resume_is_exact(stage, chain):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run
    (with facial-component discriminators and the identity loss for retrain_components)."""
    _write_landmarks(chain)
    assert_resume_is_exact(chain, osp.join(TINY, f'{stage}.yml'))
