"""CodeFormer blind degradation datasets: reproducible, validated ranges, folder / meta-info / LMDB."""
import numpy as np
import pytest
import torch

from basicsr_sinca.data.ffhq_blind_dataset import FFHQBlindDataset, FFHQBlindJointDataset
from basicsr_sinca.utils.sample_data import write_face_images


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp('faces')
    write_face_images(str(root), 96, 4)
    return str(root)


def _opt(root, **kw):
    opt = dict(name='faces', phase='train', dataroot_gt=root, io_backend={'type': 'disk'}, gt_size=96, in_size=96,
               blur_sigma=[1, 4], downsample_range=[2, 6], noise_range=[0, 15], jpeg_range=[40, 90])
    opt.update(kw)
    return opt


def test_same_seed_same_lq_and_range(faces):
    a, b = FFHQBlindDataset(_opt(faces, seed=5)), FFHQBlindDataset(_opt(faces, seed=5))
    item = a[1]
    assert torch.equal(item['lq'], b[1]['lq']) and torch.equal(item['lq'], a[1]['lq'])
    assert not torch.equal(item['lq'], FFHQBlindDataset(_opt(faces, seed=6))[1]['lq'])
    assert not torch.equal(a[0]['lq'], a[1]['lq'])
    assert item['lq'].shape == item['gt'].shape == (3, 96, 96)
    assert -1 <= item['lq'].min() and item['lq'].max() <= 1 and -1 <= item['gt'].min() and item['gt'].max() <= 1
    lq_levels = (item['lq'] * 0.5 + 0.5) * 255
    assert torch.allclose(lq_levels, lq_levels.round(), atol=1e-4)  # 8-bit levels
    # degraded: blurred/noisy LQ differs from GT, but is still the same picture
    diff = (item['lq'] - item['gt']).abs().mean()
    assert 0.01 < diff < 0.5


def test_unseeded_follows_numpy_global_seed(faces):
    ds = FFHQBlindDataset(_opt(faces))
    np.random.seed(3)
    first = ds[0]['lq']
    np.random.seed(3)
    assert torch.equal(ds[0]['lq'], first)


def test_joint_dataset_has_two_degradations(faces):
    item = FFHQBlindJointDataset(_opt(faces, seed=1, blur_sigma_large=[5, 8], downsample_range_large=[8, 10]))[0]
    assert set(item) >= {'lq', 'lq_large', 'gt'}
    # the large degradation loses more
    assert (item['lq_large'] - item['gt']).abs().mean() > (item['lq'] - item['gt']).abs().mean()


@pytest.mark.parametrize('key, value, msg', [
    ('blur_sigma', [15, 1], 'blur_sigma: expected [min, max]'),
    ('downsample_range', [0.05, 4], 'downsample_range: expected [min, max] with 0.1 <='),
    ('noise_range', [-1, 5], 'noise_range'),
    ('jpeg_range', [10, 120], 'jpeg_range'),
    ('jpeg_range_large', [0, 50], 'jpeg_range_large'),
    ('blur_kernel_size', 40, 'blur_kernel_size: expected an odd positive integer'),
    ('blur_kernel_size', [39, 40], 'blur_kernel_size: expected an odd positive integer or a list'),
    ('kernel_prob', [0.7, 0.7], 'kernel_list/kernel_prob'),
    ('gray_prob', 1.5, 'gray_prob: expected a probability'),
])
def test_bad_ranges_rejected(faces, key, value, msg):
    with pytest.raises(ValueError, match=r'datasets\.train\(faces\)\.' + msg.replace('[', r'\[').replace(']', r'\]')):
        FFHQBlindJointDataset(_opt(faces, **{key: value}))


def test_daefr_ranges_kernel_size_choice_and_enlarging_scale(faces):
    """DAEFR's degradation through the same dataset: kernel size drawn from [39, 41], scale factors below 1."""
    from basicsr_sinca.data.ffhq_blind_dataset import BlindDegradation
    deg = BlindDegradation('daefr', blur_sigma=[0.1, 10], downsample_range=[0.8, 8], noise_range=[0, 20],
                           jpeg_range=[60, 100], blur_kernel_size=[39, 41])
    rng = np.random.default_rng(0)
    drawn = [deg.sample(rng) for _ in range(300)]
    assert {p['kernel_size'] for p in drawn} == {39, 41} and min(p['scale'] for p in drawn) < 1
    params = dict(drawn[0], scale=0.8, noise=0.0, jpeg=100, kernel_size=39)
    lq = deg.apply(np.full((64, 64, 3), 0.5, np.float32), params, 64, rng)
    assert lq.shape == (64, 64, 3) and abs(float(lq.mean()) - 0.5) < 0.01
    item = FFHQBlindDataset(_opt(faces, seed=3, blur_kernel_size=[39, 41], downsample_range=[0.8, 8]))[0]
    assert item['lq'].shape == item['gt'].shape


def test_color_options_and_gray(faces):
    item = FFHQBlindDataset(_opt(faces, seed=2, gray_prob=1.0, gt_gray=True, color_jitter_pt_prob=0.0))[0]
    assert torch.allclose(item['lq'][0], item['lq'][1]) and torch.allclose(item['gt'][0], item['gt'][2], atol=1e-6)
    jit = FFHQBlindDataset(_opt(faces, seed=2, color_jitter_prob=1.0, color_jitter_pt_prob=1.0))[0]
    plain = FFHQBlindDataset(_opt(faces, seed=2))[0]
    assert torch.equal(jit['gt'], plain['gt']) and not torch.equal(jit['lq'], plain['lq'])


def test_meta_info_and_lmdb(faces, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('face_002.png (96,96,3)\nface_000.png (96,96,3)\n')
    ds = FFHQBlindDataset(_opt(faces, meta_info_file=str(meta), seed=0))
    assert len(ds) == 2 and ds[0]['gt_path'].endswith('face_002.png')

    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    import os
    names = sorted(os.listdir(faces))
    lmdb_path = str(tmp_path / 'faces.lmdb')
    make_lmdb_from_imgs(faces, lmdb_path, names, [n.split('.')[0] for n in names])
    lm = FFHQBlindDataset(_opt(lmdb_path, io_backend={'type': 'lmdb'}, seed=0))
    disk = FFHQBlindDataset(_opt(faces, seed=0))
    assert len(lm) == len(disk) == 4
    assert torch.equal(lm[3]['gt'], disk[3]['gt']) and torch.equal(lm[3]['lq'], disk[3]['lq'])


def test_empty_folder_and_bad_image(tmp_path):
    with pytest.raises(ValueError, match='dataroot_gt: no images found'):
        FFHQBlindDataset(_opt(str(tmp_path)))
    (tmp_path / 'bad.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='cannot decode image .*bad.png'):
        FFHQBlindDataset(_opt(str(tmp_path)))[0]


def _landmarks(faces):
    import os
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(faces))
    # on the 512 px frame: left eye at x 200, right eye at x 312, mouth at (256, 380)
    return {stem: {'left_eye': [200.0, 250.0, 20.0], 'right_eye': [312.0, 250.0, 20.0], 'mouth': [256.0, 380.0, 40.0]}
            for stem in stems}


def test_component_boxes_follow_flips_and_size(faces, tmp_path):
    import json
    path = tmp_path / 'landmarks.json'
    path.write_text(json.dumps(_landmarks(faces)))
    ds = FFHQBlindDataset(_opt(faces, crop_components=True, component_path=str(path), eye_enlarge_ratio=1.5,
                               use_hflip=True, seed=0))
    s = 96 / 512
    flips = set()
    for i in range(len(ds)):
        item = ds[i]
        flips.add(ds.flipped)
        left, right, mouth = item['loc_left_eye'], item['loc_right_eye'], item['loc_mouth']
        assert torch.allclose(mouth, torch.tensor([216.0, 340.0, 296.0, 420.0]) * s)  # symmetric: same after a flip
        # eyes widened by 1.5; after a flip the left box is the mirrored right eye (512 - 312 = 200 again)
        assert torch.allclose(left, torch.tensor([170.0, 220.0, 230.0, 280.0]) * s)
        assert torch.allclose(right, torch.tensor([282.0, 220.0, 342.0, 280.0]) * s)
    assert flips == {True, False}
    asym = {k: dict(v, left_eye=[190.0, 250.0, 20.0]) for k, v in _landmarks(faces).items()}
    path.write_text(json.dumps(asym))
    ds = FFHQBlindDataset(_opt(faces, crop_components=True, component_path=str(path), eye_enlarge_ratio=1.0,
                               use_hflip=True, seed=0))
    for i in range(len(ds)):
        item = ds[i]
        right_x = (512 - 190.0) if ds.flipped else 312.0  # flipped: the old left eye, mirrored, is the right one
        assert torch.isclose(item['loc_right_eye'][0], torch.tensor((right_x - 20) * s))


def test_component_landmark_files(faces, tmp_path):
    landmarks = {k: {name: np.array(v) for name, v in parts.items()} for k, parts in _landmarks(faces).items()}
    torch.save(landmarks, tmp_path / 'landmarks.pth')  # numpy arrays, as GFPGAN's file: read without running code
    ds = FFHQBlindDataset(_opt(faces, crop_components=True, component_path=str(tmp_path / 'landmarks.pth')))
    assert ds[0]['loc_mouth'].shape == (4, )

    import datetime
    torch.save({'face_000': datetime.date(2020, 1, 1)}, tmp_path / 'evil.pth')  # any non-array object is refused
    ds = FFHQBlindDataset(_opt(faces, crop_components=True, component_path=str(tmp_path / 'evil.pth')))
    with pytest.raises(ValueError, match='holds objects other than tensors'):
        ds[0]
    ds = FFHQBlindDataset(_opt(faces, crop_components=True, component_path=str(tmp_path / 'landmarks.pth')))
    ds.components = {'other': {}}
    with pytest.raises(ValueError, match=r'no landmarks for .*face_000\.png \(looked for face_000, 00000000\)'):
        ds[0]
    with pytest.raises(ValueError, match='component_path: crop_components needs the landmark file'):
        FFHQBlindDataset(_opt(faces, crop_components=True))[0]


def test_two_indices_of_one_image_get_their_own_degradation(tmp_path):
    """One image under two names: same GT, different LQ under one seed (the per-sample generator depends on the
    index), and the same LQ per index across dataset instances."""
    import shutil
    write_face_images(str(tmp_path / 'src'), 96, 1)
    (only, ) = (tmp_path / 'src').iterdir()
    (tmp_path / 'twice').mkdir()
    for name in ('a.png', 'b.png'):
        shutil.copy(only, tmp_path / 'twice' / name)
    a, b = FFHQBlindDataset(_opt(str(tmp_path / 'twice'), seed=5)), FFHQBlindDataset(_opt(str(tmp_path / 'twice'),
                                                                                           seed=5))
    assert torch.equal(a[0]['gt'], a[1]['gt'])
    assert not torch.equal(a[0]['lq'], a[1]['lq'])
    assert torch.equal(a[0]['lq'], b[0]['lq']) and torch.equal(a[1]['lq'], b[1]['lq'])
