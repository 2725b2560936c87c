"""sinca-restore (basicsr_sinca/restore.py), offline: whole photos through dlib with a tiny random CodeFormer, a photo
without a face, SR with a tiny FeMaSR and tiling, options that do not fit the network. dlib is required (the `face`
extra): without it these tests fail, they are never skipped."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, sub_env

from basicsr_sinca import restore
from basicsr_sinca.utils import face_helper as fh
from basicsr_sinca.utils.inference import build_net_from_options
from basicsr_sinca.utils.sample_data import load_photo

TINY_CF = 'train/codeformer/tiny/stage2_sinca'  # packaged option names, as a user gives them
TINY_SR = 'train/femasr/tiny/x4_sinca'
TINY_SR_NEAREST = 'train/femasr/tiny/x4_retrain'  # FeMaSR's own nearest-code bottleneck: a faster background net


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    """Random tiny CodeFormer (64 px faces) and FeMaSR x4 (SinCA and nearest) checkpoints."""
    from basicsr_sinca.utils.options import resolve_option_file
    root = tmp_path_factory.mktemp('restore_ckpts')
    torch.manual_seed(0)
    cf = build_net_from_options(resolve_option_file(TINY_CF))
    torch.save({'params_ema': cf.state_dict()}, root / 'cf.pth')
    sr = build_net_from_options(resolve_option_file(TINY_SR))
    torch.save({'params': sr.state_dict()}, root / 'sr.pth')
    sr_nearest = build_net_from_options(resolve_option_file(TINY_SR_NEAREST))
    torch.save({'params': sr_nearest.state_dict()}, root / 'sr_nearest.pth')
    return {'cf': str(root / 'cf.pth'), 'sr': str(root / 'sr.pth'), 'sr_nearest': str(root / 'sr_nearest.pth')}


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'astronaut.png'), load_photo('astronaut'))
    cv2.imwrite(str(folder / 'coffee.png'), load_photo('coffee'))
    return folder


def _dlib_direct(img):
    """dlib called directly (not through the face helper): boxes and five points of every detection."""
    import dlib
    rgb = np.ascontiguousarray(img[..., ::-1])
    rects, scores, _ = dlib.get_frontal_face_detector().run(rgb, 1, 0.0)
    predictor = dlib.shape_predictor(fh.face_recognition_model_file('shape_predictor_5_face_landmarks.dat'))
    found = [([r.left(), r.top(), r.right(), r.bottom()], [[p.x, p.y] for p in predictor(rgb, r).parts()], s)
             for r, s in zip(rects, scores)]
    return sorted(found, key=lambda f: -f[2])


def test_whole_photo_with_dlib_and_a_photo_without_face(photos, tmp_path, ckpts, capsys):
    """The astronaut (512x512, one real face) restored as a whole photo: exactly dlib's detections are reported and
    restored, the output has the input's size, pixels outside the pasted boxes are unchanged, the aligned crops are
    saved; the coffee photo is reported as "no face" and written unchanged (-s 1)."""
    out = tmp_path / 'out'
    rc = restore.main(['-i', str(photos), '-o', str(out), '--opt', TINY_CF, '--model_path', ckpts['cf'],
                       '--save_faces', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    astro = load_photo('astronaut')
    detected = _dlib_direct(astro)
    assert any(150 < (b[0] + b[2]) / 2 < 260 and 80 < (b[1] + b[3]) / 2 < 160 for b, _, _ in detected)  # her face
    report = json.loads((out / 'faces.json').read_text())
    assert report['detector'] == 'dlib' and report['face_size'] == 64
    by_name = {os.path.basename(r['input']): r for r in report['inputs']}
    faces = by_name['astronaut.png']['faces']
    assert [f['box'] for f in faces] == [b for b, _, _ in detected]
    assert [f['landmarks'] for f in faces] == [p for _, p, _ in detected]
    assert all(f['restored'] for f in faces)
    assert f'astronaut.png: {len(detected)} face(s) detected, {len(detected)} restored' in printed
    for k, (box, _, _) in enumerate(detected):
        assert f"#{k} box ({', '.join(str(v) for v in box)})" in printed

    final = cv2.imread(str(out / 'final_results' / 'astronaut.png'))
    assert final.shape == astro.shape
    outside = np.ones(astro.shape[:2], bool)
    for f in faces:
        x0, y0, x1, y1 = f['pasted_box']
        outside[y0:y1, x0:x1] = False
    assert outside.mean() > 0.6 and np.array_equal(final[outside], astro[outside])
    changed = np.abs(final.astype(int) - astro.astype(int)).sum(axis=2) > 0
    assert changed[100:140, 200:250].mean() > 0.9  # her eyes and nose were replaced by the (random) network

    # the aligned crops, one per face, as the helper cuts them: her eyes on the template's eye positions
    for k, (_, points, _) in enumerate(detected):
        crop = cv2.imread(str(out / 'cropped_faces' / f'astronaut_{k:02d}.png'))
        face = fh.Face(np.zeros(4), 1.0, np.array(points, float), 'dlib5')
        assert np.array_equal(crop, fh.warp_face(astro, fh.alignment_matrix(face, 64), 64))
        assert cv2.imread(str(out / 'restored_faces' / f'astronaut_{k:02d}.png')).shape == (64, 64, 3)

    assert 'coffee.png: no face detected; written as the input' in printed
    assert by_name['coffee.png']['status'] == 'no face' and by_name['coffee.png']['faces'] == []
    assert np.array_equal(cv2.imread(str(out / 'final_results' / 'coffee.png')), load_photo('coffee'))
    assert f'{len(detected)} face(s) restored; 1 image(s) with no face' in printed
    assert '2 image(s) restored into' in printed
    assert sorted(os.listdir(out / 'cropped_faces')) == [f'astronaut_{k:02d}.png' for k in range(len(detected))]


def test_background_upscale_gray_photo_center_face_and_small_faces(photos, tmp_path, ckpts, capsys):
    """-s 2 (bicubic background), a gray photo stays gray, --only_center_face and --min_eye_dist skip faces and say
    why; the glob input picks only the matching files."""
    gray = cv2.cvtColor(cv2.cvtColor(load_photo('astronaut'), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(photos / 'gray.jpg'), gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = tmp_path / 'out'
    rc = restore.main(['-i', str(photos / '*.png'), '-o', str(out), '--opt', TINY_CF, '--model_path', ckpts['cf'],
                       '-s', '2', '--only_center_face', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert rc == 0 and sorted(os.listdir(out / 'final_results')) == ['astronaut.png', 'coffee.png']
    coffee = load_photo('coffee')
    assert np.array_equal(cv2.imread(str(out / 'final_results' / 'coffee.png')),
                          cv2.resize(coffee, (1200, 800), interpolation=cv2.INTER_CUBIC))
    assert 'written as the input upsampled x2' in printed
    faces = json.loads((out / 'faces.json').read_text())['inputs'][0]['faces']
    restored = [f for f in faces if f['restored']]
    assert len(restored) == 1 and 150 < restored[0]['box'][0] < 200  # her face: nearest the centre
    assert all(f['skipped'] == 'not the centre face (--only_center_face)' for f in faces if not f['restored'])
    assert cv2.imread(str(out / 'final_results' / 'astronaut.png')).shape == (1024, 1024, 3)

    out2 = tmp_path / 'out2'
    rc = restore.main(['-i', str(photos / 'gray.jpg'), '-o', str(out2), '--opt', TINY_CF, '--model_path',
                       ckpts['cf'], '--min_eye_dist', '1000', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert rc == 0 and 'skipped: eye distance' in printed and '< --min_eye_dist 1000' in printed
    assert '0 face(s) restored' in printed
    out3 = tmp_path / 'out3'
    assert restore.main(['-i', str(photos / 'gray.jpg'), '-o', str(out3), '--opt', TINY_CF, '--model_path',
                         ckpts['cf'], '--device', 'cpu']) == 0
    result = cv2.imread(str(out3 / 'final_results' / 'gray.png'))
    assert np.abs(result.astype(int) - cv2.imread(str(photos / 'gray.jpg')).astype(int)).max() > 0  # a face pasted
    assert np.array_equal(result[..., 0], result[..., 1]) and np.array_equal(result[..., 1], result[..., 2])


def test_background_upsampled_by_an_sr_network_of_the_package(tmp_path, ckpts, capsys):
    """-s 4 with --bg_opt / --bg_model_path: the background is the SR network's output (tiled here), the face is
    pasted at 4x, and outside the pasted box the result is exactly the SR network's output."""
    from basicsr_sinca.restore import super_resolve
    from basicsr_sinca.utils.inference import output2img
    from basicsr_sinca.utils.options import resolve_option_file
    src = tmp_path / 'in'
    src.mkdir()
    crop = cv2.resize(load_photo('astronaut')[:384, 64:448], (128, 128), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(src / 'face.png'), crop)  # her face about 30 px wide: dlib needs --det_upsample 2
    out = tmp_path / 'out'
    rc = restore.main(['-i', str(src), '-o', str(out), '--opt', TINY_CF, '--model_path', ckpts['cf'], '-s', '4',
                       '--bg_opt', TINY_SR_NEAREST, '--bg_model_path', ckpts['sr_nearest'], '--max_size', '64',
                       '--tile_size', '64', '--tile_pad', '8', '--det_upsample', '2', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert rc == 0 and 'background x4 (SinCAFeMaSRNet)' in printed  # the network named, not bicubic
    report = json.loads((out / 'faces.json').read_text())
    assert report['scale'] == 4
    faces = report['inputs'][0]['faces']
    assert len(faces) == 1 and faces[0]['restored']
    final = cv2.imread(str(out / 'final_results' / 'face.png'))
    assert final.shape == (512, 512, 3)
    torch.manual_seed(0)
    sr = build_net_from_options(resolve_option_file(TINY_SR_NEAREST))
    sr.load_state_dict(torch.load(ckpts['sr_nearest'])['params'])
    background = output2img(super_resolve(sr.eval(), crop, torch.device('cpu'), 64, 64, 8), (0, 1))
    x0, y0, x1, y1 = faces[0]['pasted_box']
    assert x1 - x0 > 4 * 40  # the face square, pasted at 4x
    outside = np.ones((512, 512), bool)
    outside[y0:y1, x0:x1] = False
    assert outside.any() and np.array_equal(final[outside], background[outside])


def test_sr_folder_with_tiling_through_the_same_command(tmp_path, ckpts, monkeypatch, capsys):
    """A tiny FeMaSR x4 (packaged option name) on a folder: images over --max_size^2 go through tiles, the others in
    one piece; an unreadable file is reported and the batch goes on (exit 1)."""
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'small.png'), load_photo('rocket')[:30, :30])
    cv2.imwrite(str(src / 'large.png'), load_photo('chelsea')[:48, :72])
    (src / 'broken.png').write_bytes(b'\x89PNG not really')
    calls = []
    from basicsr_sinca.archs.femasr_arch import SinCAFeMaSRNet
    tile = SinCAFeMaSRNet.test_tile

    def counted_tile(self, x, *args):
        calls.append(tuple(x.shape[-2:]))
        return tile(self, x, *args)

    monkeypatch.setattr(SinCAFeMaSRNet, 'test_tile', counted_tile)
    out = tmp_path / 'out'
    rc = restore.main(['-i', str(src), '-o', str(out), '--opt', TINY_SR, '--model_path', ckpts['sr'], '-s', '4',
                       '--max_size', '40', '--tile_size', '32', '--tile_pad', '8', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert rc == 1 and 'broken.png: not a readable image' in printed and '2 image(s) written to' in printed
    assert sorted(os.listdir(out)) == ['large.png', 'small.png']  # no faces.json, no face folders
    assert cv2.imread(str(out / 'large.png')).shape == (192, 288, 3)
    assert cv2.imread(str(out / 'small.png')).shape == (120, 120, 3)
    assert calls == [(48, 72)]  # only the large image was tiled


def test_options_that_do_not_fit_the_network_are_one_line_errors(photos, tmp_path, ckpts, capsys):
    out = tmp_path / 'out'
    cases = [
        (['--opt', TINY_SR, '--model_path', ckpts['sr'], '--save_faces'], '--save_faces: SinCAFeMaSRNet is an SR'),
        (['--opt', TINY_SR, '--model_path', ckpts['sr'], '-w', '0.5'], '-w: SinCAFeMaSRNet is an SR network'),
        (['--opt', TINY_SR, '--model_path', ckpts['sr'], '-s', '2'], 'scale_factor is 4 but -s/--out_scale is 2'),
        (['--opt', TINY_CF, '--model_path', ckpts['cf'], '--maps'], '--maps: SinCACodeFormer is a face network'),
        (['--opt', TINY_CF, '--model_path', ckpts['cf'], '--has_aligned', '-s', '2'], 'aligned faces'),
        (['--opt', TINY_CF, '--model_path', ckpts['cf'], '--bg_opt', TINY_SR], '--bg_opt and --bg_model_path'),
        (['--opt', TINY_CF, '--model_path', ckpts['cf'], '--bg_opt', TINY_CF, '--bg_model_path', ckpts['cf']],
         'is not an SR network'),
        (['--opt', 'no_such_option', '--model_path', ckpts['cf']], 'option file not found: no_such_option'),
        (['--opt', TINY_CF, '--model_path', ckpts['sr']], 'does not match SinCACodeFormer'),
    ]
    for extra, expected in cases:
        assert restore.main(['-i', str(photos), '-o', str(out), '--device', 'cpu'] + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert expected in err and '\n' not in err, (extra, err)
    assert restore.main(['-i', str(photos / '*.tif'), '-o', str(out), '--model_path', ckpts['cf']]) == 2
    assert 'no file matches' in capsys.readouterr().err
    assert not out.exists()


def test_python_dash_m_and_the_console_script_entry(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'basicsr_sinca.restore', '--help'], cwd=tmp_path, env=sub_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '--detector' in proc.stdout and '--opt' in proc.stdout
    setup_text = open(os.path.join(REPO, 'setup.py')).read()
    assert "'sinca-restore=basicsr_sinca.restore:main'" in setup_text
    assert "'dlib-bin" in setup_text and "'face-recognition-models" in setup_text
