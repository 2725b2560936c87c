"""Face restoration through scripts/inference_face.py (an alias of sinca-restore): aligned folders of real photos,
bad files, whole-image mode with facexlib's RetinaFace and ParseNet."""
import os
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO

sys.path.insert(0, osp.join(REPO, 'scripts'))
import inference_face  # noqa: E402

from basicsr_sinca.utils.inference import build_net_from_options  # noqa: E402
from basicsr_sinca.utils.sample_data import load_photo  # noqa: E402

TINY_OPT = osp.join(REPO, 'options', 'train', 'codeformer', 'tiny', 'stage2_sinca.yml')


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp('cf_infer')
    torch.manual_seed(0)
    net = build_net_from_options(TINY_OPT)
    path = root / 'net_g.pth'
    torch.save({'params_ema': net.state_dict(), 'params': net.state_dict()}, path)
    return str(path)


def _inputs(folder):
    os.makedirs(folder, exist_ok=True)
    astro = load_photo('astronaut')
    face = astro[20:240, 140:360]  # a real face, not square-resized yet
    cv2.imwrite(osp.join(folder, 'astronaut_face.png'), face)
    cv2.imwrite(osp.join(folder, 'gray_face.jpg'), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(osp.join(folder, 'rgba_face.png'), np.dstack([face, np.full(face.shape[:2], 200, np.uint8)]))
    cv2.imwrite(osp.join(folder, 'deep_face.png'), face.astype(np.uint16) * 257)
    open(osp.join(folder, 'empty.png'), 'wb').close()
    with open(osp.join(folder, 'truncated.png'), 'wb') as f:
        f.write(open(osp.join(folder, 'astronaut_face.png'), 'rb').read()[:200])
    with open(osp.join(folder, 'readme.txt'), 'w') as f:
        f.write('not an image')


def test_aligned_folder(tmp_path, tiny_ckpt, capsys):
    _inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    rc = inference_face.main(['-i', str(tmp_path / 'in'), '-o', str(out), '--has_aligned', '--opt', TINY_OPT,
                                    '--model_path', tiny_ckpt, '-w', '0.7'])
    assert rc == 1  # three inputs failed
    written = sorted(os.listdir(out / 'restored_faces'))
    assert written == ['astronaut_face.png', 'deep_face.png', 'gray_face.png', 'rgba_face.png']
    for name in written:
        img = cv2.imread(str(out / 'restored_faces' / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    gray = cv2.imread(str(out / 'restored_faces' / 'gray_face.png'))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    printed = capsys.readouterr().out
    for bad in ('empty.png: empty file', 'truncated.png: not a readable image', 'readme.txt: not a readable image'):
        assert bad in printed
    assert '4 image(s) restored' in printed and '3 failed' in printed
    assert not [f for f in os.listdir(out / 'restored_faces') if f.startswith('.')]  # no temp files


def test_errors(tmp_path, tiny_ckpt, capsys):
    assert inference_face.main(['-i', str(tmp_path / 'nothere'), '--model_path', tiny_ckpt, '--opt', TINY_OPT,
                                      '--has_aligned']) == 2
    assert 'input not found' in capsys.readouterr().err
    _inputs(tmp_path / 'in')
    assert inference_face.main(['-i', str(tmp_path / 'in'), '--model_path', tiny_ckpt, '--has_aligned']) == 2
    assert 'does not match CodeFormer' in capsys.readouterr().err  # the tiny checkpoint is not the official net
    # RetinaFace without its weights and without a download: one line naming the file, the folder and the way out
    assert inference_face.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model_path', tiny_ckpt,
                                '--opt', TINY_OPT, '--detector', 'retinaface', '--no_download',
                                '--face_model_dir', str(tmp_path / 'fx')]) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'detection_Resnet50_Final.pth' in err and str(tmp_path / 'fx') in err
    assert '--detector dlib' in err and not (tmp_path / 'out').exists()
    assert inference_face.main(['-i', str(tmp_path / 'in'), '--model_path', tiny_ckpt, '-w', '2']) == 2


def test_whole_image_mode_retinaface_and_parsing(tmp_path, tiny_ckpt, monkeypatch):
    """facexlib's RetinaFace and ParseNet with (random) local weights, loaded through the package's checkpoint
    loader; the detector's output is replaced by the astronaut's true five points, so the alignment, restoration,
    parsing mask and paste-back run for real."""
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    from basicsr_sinca.utils.face_helper import Face, RetinaFaceDetector
    fx = tmp_path / 'fx'
    fx.mkdir()
    torch.save(RetinaFace(network_name='resnet50', half=False, device='cpu').state_dict(),
               fx / 'detection_Resnet50_Final.pth')
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), fx / 'parsing_parsenet.pth')
    landmarks = np.array([[212., 118.], [263., 121.], [240., 150.], [214., 180.], [257., 182.]])  # eyes, nose, mouth
    box = np.array([180., 70., 290., 210.])
    monkeypatch.setattr(RetinaFaceDetector, 'detect', lambda self, img: [Face(box, 0.99, landmarks, 'ffhq5')])
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'astronaut.png'), load_photo('astronaut'))
    out = tmp_path / 'out'
    assert inference_face.main(['-i', str(tmp_path / 'in'), '-o', str(out), '--opt', TINY_OPT, '--save_faces',
                                '--model_path', tiny_ckpt, '--face_model_dir', str(fx), '--detector',
                                'retinaface']) == 0
    final = cv2.imread(str(out / 'final_results' / 'astronaut.png'))
    face = cv2.imread(str(out / 'cropped_faces' / 'astronaut_00.png'))
    assert final.shape == (512, 512, 3) and face.shape == (64, 64, 3)
    assert (out / 'restored_faces' / 'astronaut_00.png').is_file()
    original = load_photo('astronaut')
    changed = np.abs(final.astype(int) - original.astype(int)).sum(axis=2) > 0
    assert changed[100:200, 200:280].mean() > 0.3  # the face region was replaced (random ParseNet: a partial mask)
    assert changed[400:, :100].mean() == 0  # the background corner was not touched
    import json
    report = json.loads((out / 'faces.json').read_text())
    assert report['detector'] == 'retinaface'
    assert report['inputs'][0]['faces'][0]['restored'] and report['inputs'][0]['faces'][0]['landmarks'] == \
        landmarks.tolist()


TINY_VQFR = {'type': 'SinCAVQFRv2', 'bottleneck': 'nearest', 'base_channels': 32, 'channel_multipliers': [1, 2],
             'num_enc_blocks': 1, 'num_dec_blocks': 1, 'code_dim': 32,
             'quantizer_opt': {'type': 'L2VectorQuantizer', 'num_code': 16, 'code_dim': 32, 'spatial_size': [8, 8]}}


@pytest.fixture(scope='module')
def tiny_vqfr(tmp_path_factory):
    """A 16 px SinCAVQFRv2 with random weights: (option file, checkpoint)."""
    import yaml
    root = tmp_path_factory.mktemp('vqfr_infer')
    opt = root / 'tiny_vqfr.yml'
    opt.write_text(yaml.safe_dump({'network_g': TINY_VQFR}, sort_keys=False))
    torch.manual_seed(0)
    net = build_net_from_options(str(opt))
    assert net.img_size == 16
    torch.save({'params_ema': net.state_dict()}, root / 'net_g.pth')
    return str(opt), str(root / 'net_g.pth')


def _restored(out):
    return cv2.imread(str(out / 'restored_faces' / 'astronaut_face.png'), cv2.IMREAD_UNCHANGED)


def test_vqfr_fidelity_ratio(tmp_path, tiny_vqfr):
    from basicsr_sinca.utils.inference import img2input, output2img
    opt, ckpt = tiny_vqfr
    (tmp_path / 'in').mkdir()
    face = load_photo('astronaut')[20:240, 140:360]
    cv2.imwrite(str(tmp_path / 'in' / 'astronaut_face.png'), face)
    outs = {}
    for ratio in ('0', '1', None):
        out = tmp_path / f'out_{ratio}'
        extra = [] if ratio is None else ['--fidelity_ratio', ratio]
        assert inference_face.main(['-i', str(tmp_path / 'in'), '-o', str(out), '--has_aligned', '--opt', opt,
                                    '--model_path', ckpt, '--device', 'cpu'] + extra) == 0
        outs[ratio] = _restored(out)
        assert outs[ratio].shape == (16, 16, 3)
    assert np.abs(outs['0'].astype(int) - outs['1'].astype(int)).max() > 0  # the main branch counts at 1
    assert np.array_equal(outs[None], outs['1'])  # not given: the network's default, 1.0

    # fidelity_ratio 0 is the network's texture branch alone
    net = build_net_from_options(opt)
    net.load_state_dict(torch.load(ckpt)['params_ema'])
    net.eval()
    with torch.no_grad():
        x = -1 + 2 * img2input(cv2.resize(face, (16, 16), interpolation=cv2.INTER_LINEAR), 'cpu', normalize=False)
        texture = output2img(net.restore(x).context['texture_dec'], net.image_range)
    assert np.array_equal(outs['0'], texture)


def test_fidelity_ratio_errors(tmp_path, tiny_ckpt, tiny_vqfr, capsys):
    _inputs(tmp_path / 'in')
    opt, ckpt = tiny_vqfr
    base = ['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--has_aligned', '--device', 'cpu']
    # a network whose decode has no fidelity ratio (the tiny CodeFormer)
    assert inference_face.main(base + ['--opt', TINY_OPT, '--model_path', tiny_ckpt, '--fidelity_ratio', '0.5']) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and '--fidelity_ratio' in err and 'SinCACodeFormer' in err
    for bad in ('1.5', '-0.1'):
        assert inference_face.main(base + ['--opt', opt, '--model_path', ckpt, '--fidelity_ratio', bad]) == 2
        err = capsys.readouterr().err.strip()
        assert '\n' not in err and '--fidelity_ratio' in err and bad in err and '[0, 1]' in err
    # CodeFormer's -w is no VQFR option either
    assert inference_face.main(base + ['--opt', opt, '--model_path', ckpt, '-w', '0.5']) == 2
    assert 'SinCAVQFRv2' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_output_folder_holding_the_inputs_is_refused(tmp_path, tiny_ckpt, capsys):
    """Face restoration and the pair generator never write into the folder of their inputs (nor above it)."""
    import generate_bsrgan_pairs
    _inputs(tmp_path / 'in')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()}
    assert inference_face.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'in'), '--has_aligned', '--opt',
                                TINY_OPT, '--model_path', tiny_ckpt]) == 2
    assert generate_bsrgan_pairs.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path), '--scale', '2']) == 2
    err = capsys.readouterr().err
    assert err.count('holds the input') == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()} == before
