"""FeMaSR inference: tiling vs whole image on a real photo, a 1024x1024 LR input on CPU, the SR script."""
import os
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, peak_rss_mb

from basicsr_sinca.utils.inference import build_net_from_options, img2input
from basicsr_sinca.utils.sample_data import load_photo

sys.path.insert(0, osp.join(REPO, 'scripts'))
import inference_sr  # noqa: E402

TINY_OPT = osp.join(REPO, 'options', 'train', 'femasr', 'tiny', 'x4_sinca.yml')


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return build_net_from_options(TINY_OPT).eval()


def test_single_tile_equals_whole_image(net):
    x = img2input(load_photo('chelsea')[:60, :90], 'cpu', normalize=False)
    with torch.no_grad():
        assert torch.equal(net.test_tile(x, tile_size=128, tile_pad=8), net.test(x))


def test_tile_stitching_is_exact_for_a_local_operator(net, monkeypatch):
    """With a local per-tile operator (x4 nearest upsampling + 5x5 blur, receptive field 2 LR px < tile_pad) the
    stitched result equals the whole-image result exactly, away from the image border."""
    weight = torch.full((3, 1, 5, 5), 1 / 25.0)

    def local_test(x):
        up = torch.nn.functional.interpolate(x, scale_factor=4, mode='nearest')
        return torch.nn.functional.conv2d(up, weight, padding=2, groups=3)

    monkeypatch.setattr(net, 'test', local_test)
    x = img2input(load_photo('chelsea')[:150, :230], 'cpu', normalize=False)
    whole = local_test(x)
    tiled = net.test_tile(x, tile_size=64, tile_pad=8)  # tiles at 0, 64, 86 (last one moved back) x 0, 64, 128, 166
    assert tiled.shape == whole.shape == (1, 3, 600, 920)
    assert torch.equal(tiled[..., 4:-4, 4:-4], whole[..., 4:-4, 4:-4])


def test_real_network_tiles_without_seams(net):
    """The FeMaSR net on a real photo: GroupNorm statistics and the global attention are per tile (as in upstream
    FeMaSR), so tiles are not bit-exact; the error must not concentrate at the seams."""
    x = img2input(load_photo('chelsea')[:192, :256], 'cpu', normalize=False)
    with torch.no_grad():
        whole = net.test(x)
        tiled = net.test_tile(x, tile_size=64, tile_pad=32)
    assert tiled.shape == whole.shape == (1, 3, 768, 1024)
    diff = (whole - tiled).abs().mean(dim=1)[0]
    near = torch.zeros_like(diff, dtype=torch.bool)
    for seam in (256, 512):
        near[seam - 16:seam + 16] = True
    for seam in (256, 512, 768):
        near[:, seam - 16:seam + 16] = True
    assert float(diff[near].mean()) < 1.5 * float(diff[~near].mean())



@pytest.mark.skipif(not osp.exists('/proc/self/clear_refs'), reason='peak-memory probe needs Linux /proc')
def test_1024_lr_input_with_sinca_on_cpu():
    """A 1024x1024 LR image through the SinCA bottleneck (tiled, x2 to keep CI time down) within a memory budget;
    untiled, the 256x256-token latent would need a 65536 x 66560 attention map per head (~140 GB) if materialised."""
    torch.manual_seed(0)
    from basicsr_sinca.utils.options import load_options
    from basicsr.archs import build_network
    opt = load_options(TINY_OPT)['network_g']
    opt['scale_factor'] = 2
    sr = build_network(opt).eval()
    photo = cv2.resize(load_photo('astronaut'), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    x = img2input(photo, 'cpu', normalize=False)
    with torch.no_grad():
        out, peak_mb = peak_rss_mb(lambda: sr.test_tile(x, tile_size=256, tile_pad=16))
    assert out.shape == (1, 3, 2048, 2048) and torch.isfinite(out).all()
    assert peak_mb < 3000, f'peak memory grew by {peak_mb:.0f} MB'


def test_sr_script_folder(tmp_path, net, capsys):
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    src = tmp_path / 'in'
    src.mkdir()
    photo = load_photo('rocket')[:50, :70]
    cv2.imwrite(str(src / 'photo.png'), photo)
    cv2.imwrite(str(src / 'gray.png'), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([photo, np.full(photo.shape[:2], 90, np.uint8)]))
    cv2.imwrite(str(src / 'deep.png'), photo.astype(np.uint16) * 257)
    cv2.imwrite(str(src / 'dot.png'), photo[:3, :3])
    (src / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff garbage')
    out = tmp_path / 'out'
    rc = inference_sr.main(['-i', str(src), '-o', str(out), '-s', '4', '--opt', TINY_OPT, '--model_path', str(ckpt),
                                '--max_size', '40', '--tile_size', '32', '--tile_pad', '8'])
    assert rc == 1  # two inputs failed
    assert sorted(os.listdir(out)) == ['deep.png', 'gray.png', 'photo.png', 'rgba.png']
    res = {n: cv2.imread(str(out / n), cv2.IMREAD_UNCHANGED) for n in os.listdir(out)}
    assert res['photo.png'].shape == (200, 280, 3) and res['photo.png'].dtype == np.uint8
    assert res['rgba.png'].shape == (200, 280, 4) and abs(int(res['rgba.png'][..., 3].mean()) - 90) <= 1
    assert res['deep.png'].dtype == np.uint16 and res['gray.png'].shape == (200, 280, 3)
    printed = capsys.readouterr().out
    assert 'corrupt.jpg: not a readable image' in printed and 'dot.png' in printed and 'too small' in printed
    assert inference_sr.main(['-i', str(src), '-o', str(out), '-s', '2', '--opt', TINY_OPT,
                                  '--model_path', str(ckpt)]) == 2
    assert 'scale_factor is 4 but -s/--out_scale is 2' in capsys.readouterr().err


def _ckpt(tmp_path, net):
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    return str(ckpt)


def test_inputs_are_never_overwritten_and_names_never_shared(tmp_path, net, capsys):
    """-o equal to (or above) the input folder is refused before anything is loaded; a.jpg and a.png get distinct
    outputs, reported; the printed count is the count on disk."""
    src = tmp_path / 'in'
    src.mkdir()
    photo = load_photo('rocket')[:40, :48]
    cv2.imwrite(str(src / 'a.png'), photo)
    cv2.imwrite(str(src / 'a.jpg'), photo[:, ::-1])
    cv2.imwrite(str(src / 'b.png'), photo[::-1])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    common = ['-s', '4', '--opt', TINY_OPT, '--model_path', _ckpt(tmp_path, net)]
    for out in (src, tmp_path):
        assert inference_sr.main(['-i', str(src), '-o', str(out), *common]) == 2
        assert f'-o {out}: holds the input' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before

    out = tmp_path / 'out'
    assert inference_sr.main(['-i', str(src), '-o', str(out), *common]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['a_jpg.png', 'a_png.png', 'b.png'] and '3 image(s) written' in printed
    assert 'a.jpg shares its name with another input: written as a_jpg' in printed
    assert not np.array_equal(cv2.imread(str(out / 'a_jpg.png')), cv2.imread(str(out / 'a_png.png')))

    assert inference_sr.main(['-i', str(src), '-o', str(src / 'a.png' / 'x'), *common]) == 2  # cannot be created
    assert 'cannot write there' in capsys.readouterr().err


def test_exif_orientation_applied_and_truncated_jpeg_refused(tmp_path, net, capsys):
    from PIL import Image
    src = tmp_path / 'in'
    src.mkdir()
    photo = load_photo('rocket')[:40, :56]  # stored landscape, EXIF says: rotate to portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo[..., ::-1]).save(src / 'portrait.jpg', exif=exif, quality=95)
    Image.fromarray(photo[..., ::-1]).save(src / 'full.jpg', quality=95)
    data = (src / 'full.jpg').read_bytes()
    (src / 'cut.jpg').write_bytes(data[:len(data) * 2 // 3])
    assert cv2.imread(str(src / 'cut.jpg')) is not None  # what OpenCV alone would accept
    out = tmp_path / 'out'
    rc = inference_sr.main(['-i', str(src), '-o', str(out), '-s', '4', '--opt', TINY_OPT,
                            '--model_path', _ckpt(tmp_path, net)])
    printed = capsys.readouterr().out
    assert rc == 1 and 'cut.jpg: truncated image file' in printed
    assert sorted(os.listdir(out)) == ['full.png', 'portrait.png']
    assert cv2.imread(str(out / 'portrait.png')).shape == (224, 160, 3)
    assert cv2.imread(str(out / 'full.png')).shape == (160, 224, 3)


def test_out_of_memory_falls_back_to_tiles_and_failures_do_not_stop_the_batch(tmp_path, net, monkeypatch, capsys):
    src = tmp_path / 'in'
    src.mkdir()
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(src / f'{name}.png'), load_photo('rocket')[:40, :40])
    calls = {'test': 0}
    original_test, original_tile = type(net).test, type(net).test_tile

    def test_oom(self, x):  # the whole image does not fit; tiles (test_tile runs test per tile) do
        if x.shape[-1] < 40:
            return original_test(self, x)
        calls['test'] += 1
        raise RuntimeError('CUDA out of memory. Tried to allocate 20.00 GiB')

    def tile_oom_for_b(self, x, *args):
        if calls['test'] == 2:
            raise MemoryError()
        return original_tile(self, x, *args)

    monkeypatch.setattr(type(net), 'test', test_oom)
    monkeypatch.setattr(type(net), 'test_tile', tile_oom_for_b)
    out = tmp_path / 'out'
    rc = inference_sr.main(['-i', str(src), '-o', str(out), '-s', '4', '--opt', TINY_OPT,
                            '--model_path', _ckpt(tmp_path, net), '--tile_size', '16', '--tile_pad', '4'])
    printed = capsys.readouterr().out
    assert rc == 1 and 'retrying in tiles' in printed and 'b.png: MemoryError' in printed
    assert sorted(os.listdir(out)) == ['a.png', 'c.png'] and '2 image(s) written' in printed
