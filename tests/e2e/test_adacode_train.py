"""AdaCode at toy size through the entry point: the stage-2 HQ model, stage 3 with five SinCA bottlenecks and the
re-train; per-codebook losses, frozen parts, test pipeline, SR inference with weight maps, the analysis scripts,
and a 1024x1024 LR image tiled within a memory bound."""
import json
import os
import sys
from os import path as osp

import cv2
import pytest
import torch
from helpers import (REPO, assert_resume_is_exact, entry_cmd, logged_values, make_tiny_femasr_workdir, peak_rss_mb,
                     read_train_log, run_cmd)

TINY = osp.join(REPO, 'options', 'train', 'adacode', 'tiny')
FROZEN = ('quantize_group.', 'decoder_group.', 'after_quant_group.', 'out_conv.')
sys.path.insert(0, osp.join(REPO, 'scripts'))


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp('adacode')
    make_tiny_femasr_workdir(str(root))
    for stage in ('stage2_hq', 'x4_sinca', 'x4_retrain'):
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, f'{stage}.yml')), cwd=root)
    return root


def _params(root, exp):
    return torch.load(root / 'experiments' / exp / 'models' / 'net_g_latest.pth', map_location='cpu')['params']


def test_stage3_five_bottlenecks_per_codebook_losses_and_frozen_parts(chain):
    log = read_train_log(chain / 'experiments' / 'tiny_AdaCode_x4_sinca')
    for i in range(5):
        for key in ('l_feat_match', 'l_feat_lq'):
            assert len(logged_values(log, f'{key}_c{i}')) == 6, (key, i)
    for key in ('l_pix', 'l_percep', 'l_g_gan', 'l_after_quant', 'l_contrast', 'l_d_real'):
        assert len(logged_values(log, key)) == 6, key
    assert '# psnr:' in log and 'l_feat_match:' not in log
    hq, sinca = _params(chain, 'tiny_AdaCode_stage2_hq'), _params(chain, 'tiny_AdaCode_x4_sinca')
    frozen = [k for k in sinca if k.startswith(FROZEN)]
    assert len(frozen) > 20 and all(torch.equal(sinca[k], hq[k]) for k in frozen)
    predictor = [k for k in sinca if k.startswith('weight_predictor.') and k.endswith('weight')]
    assert predictor and any(not torch.equal(sinca[k], hq[k]) for k in predictor)  # from the HQ model, then trained
    layers = {i: len({k.split('.')[4] for k in sinca if k.startswith(f'bottleneck.{i}.transformer.layers.')})
              for i in range(5)}
    assert layers == {0: 5, 1: 4, 2: 3, 3: 4, 4: 4}
    retrain = read_train_log(chain / 'experiments' / 'tiny_AdaCode_x4_retrain')
    assert all(len(logged_values(retrain, f'l_feat_lq_c{i}')) == 6 for i in range(5))
    assert 'l_feat_match' not in retrain
    assert not any(k.startswith('bottleneck') for k in _params(chain, 'tiny_AdaCode_x4_retrain'))


def test_stage2_hq_model_logs_per_codebook_perplexity(chain):
    log = read_train_log(chain / 'experiments' / 'tiny_AdaCode_stage2_hq')
    assert all(len(logged_values(log, f'perplexity_c{i}')) == 6 for i in range(5)) and '# psnr:' in log


def test_test_pipeline_and_sr_inference_with_weight_maps(chain, tmp_path):
    import inference_sr
    run_cmd(entry_cmd('test', '-opt', osp.join(REPO, 'options', 'test', 'adacode', 'tiny_test_x4_sinca.yml')),
            cwd=chain)
    res = chain / 'results' / 'tiny_test_AdaCode_x4_sinca'
    images = sorted((res / 'visualization' / 'tiny_sr_test').glob('*.png'))
    assert len(images) == 4 and cv2.imread(str(images[0])).shape == (160, 160, 3)  # whole images back from tiles
    ckpt = chain / 'experiments' / 'tiny_AdaCode_x4_sinca' / 'models' / 'net_g_latest.pth'
    rc = inference_sr.main(['-i', str(chain / 'datasets' / 'tiny_sr' / 'LR_X4'), '-o', str(tmp_path / 'out'), '-s', '4',
                            '--opt', osp.join(TINY, 'x4_sinca.yml'), '--model_path', str(ckpt), '--maps'])
    assert rc == 0
    maps = sorted(os.listdir(tmp_path / 'out' / 'maps'))
    assert len(maps) == 4 and maps[0].endswith('_maps.png')
    figure = cv2.imread(str(tmp_path / 'out' / 'maps' / maps[0]))
    assert figure.shape[1] == 6 * 160  # the output and the five codebook weight maps, side by side


def _run_script(script, chain, out, *extra):
    cwd = os.getcwd()
    os.chdir(chain)
    try:
        return script.main(['--opt', osp.join(TINY, 'x4_sinca.yml'), '--model_path',
                            'experiments/tiny_AdaCode_x4_sinca/models/net_g_latest.pth', '-o', str(out), *extra])
    finally:
        os.chdir(cwd)


def test_analysis_scripts_per_codebook(chain, tmp_path):
    import analyze_attention
    import analyze_codebook
    import restore_with_gt_indices
    assert _run_script(analyze_codebook, chain, tmp_path / 'codes') == 0
    stats = json.loads((tmp_path / 'codes' / 'codebook.json').read_text())['codebooks']
    assert [c['size'] for c in stats] == [16, 8, 16, 8, 8]
    assert all(0 <= c['accuracy'] <= 1 and 0 < c['usage_ground_truth'] <= 1 for c in stats)
    assert _run_script(analyze_attention, chain, tmp_path / 'attn') == 0
    layers = [len(c['layers']) for c in json.loads((tmp_path / 'attn' / 'attention.json').read_text())['codebooks']]
    assert layers == [5, 4, 3, 4, 4] and (tmp_path / 'attn' / 'attention_maps_c4_q0.png').is_file()
    assert _run_script(restore_with_gt_indices, chain, tmp_path / 'oracle') == 0
    assert json.loads((tmp_path / 'oracle' / 'gt_indices.json').read_text())['images'] == 4



@pytest.mark.skipif(not osp.exists('/proc/self/clear_refs'), reason='peak-memory probe needs Linux /proc')
def test_1024_lr_input_tiled_within_memory_bound():
    """A tiny x2 AdaCode + SinCA (five one-layer bottlenecks, to keep CI time down) restores a 1024x1024 LR image
    with tiling; the peak memory the call adds is printed and bounded (3 GB)."""
    from basicsr.archs import build_network

    from basicsr_sinca.utils.inference import img2input
    from basicsr_sinca.utils.options import load_options
    from basicsr_sinca.utils.sample_data import load_photo
    torch.manual_seed(0)
    opt = load_options(osp.join(TINY, 'x4_sinca.yml'))['network_g']
    net = build_network(dict(opt, scale_factor=2, bottleneck={'type': 'sinca', 'num_layers': 1, 'num_heads': 4})).eval()
    x = img2input(cv2.resize(load_photo('astronaut'), (1024, 1024), interpolation=cv2.INTER_CUBIC), 'cpu',
                  normalize=False)
    with torch.no_grad():
        out, peak_mb = peak_rss_mb(lambda: net.test_tile(x, tile_size=256, tile_pad=16))
    print(f'AdaCode x2 tiled 1024x1024 LR: peak memory +{peak_mb:.0f} MB')
    assert out.shape == (1, 3, 2048, 2048) and torch.isfinite(out).all()
    assert peak_mb < 3000, f'peak memory grew by {peak_mb:.0f} MB'


@pytest.mark.parametrize('stage', ['stage2_hq', 'x4_sinca', 'x4_retrain'])
def test_resume_is_exact(stage, chain):
    """Stopped after 2 iterations and resumed, each shipped tiny stage ends bit-identical to an uninterrupted run."""
    assert_resume_is_exact(chain, osp.join(TINY, f'{stage}.yml'))
