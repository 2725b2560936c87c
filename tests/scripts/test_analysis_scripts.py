"""Analysis tools (paper Fig. 2 / Fig. 7) on tiny trained checkpoints, checked against independent computations."""
import json
import sys
from os import path as osp

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_VQGAN, entry_cmd, make_tiny_codeformer_workdir, run_cmd

from basicsr_sinca.utils.analysis import codebook_usage, index_accuracy

sys.path.insert(0, osp.join(REPO, 'scripts'))
import analyze_attention  # noqa: E402
import analyze_codebook  # noqa: E402
import restore_with_gt_indices  # noqa: E402

TINY = osp.join(REPO, 'options', 'train', 'codeformer', 'tiny')


def test_usage_and_accuracy_on_hand_made_maps():
    pred = torch.tensor([[[0, 1], [1, 3]], [[3, 3], [0, 7]]])
    gt = torch.tensor([[[0, 1], [2, 3]], [[3, 2], [0, 6]]])
    assert index_accuracy(pred, gt) == 5 / 8
    assert codebook_usage(pred, 8) == 4 / 8  # codes 0, 1, 3, 7
    assert codebook_usage(gt, 16) == 5 / 16  # codes 0, 1, 2, 3, 6
    with pytest.raises(ValueError, match='outside'):
        codebook_usage(pred, 5)
    with pytest.raises(ValueError, match='shapes differ'):
        index_accuracy(pred, gt[:1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('analysis')
    make_tiny_codeformer_workdir(str(root))
    for name in ('stage2_sinca.yml', 'stage2_retrain.yml'):
        run_cmd(entry_cmd('train', '-opt', osp.join(TINY, name)), cwd=root)
    return root


def _run(script, root, opt, exp, out, *extra):
    import os
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return script.main(['--opt', osp.join(TINY, opt), '--model_path', f'experiments/{exp}/models/net_g_latest.pth',
                            '-o', str(out), *extra])
    finally:
        os.chdir(cwd)


def _independent(root, opt, exp):
    """The dataset, model and prior rebuilt by hand; GT codes by brute-force distances (torch.cdist)."""
    from basicsr.data import build_dataset

    from basicsr_sinca.archs.codeformer_arch import VQAutoEncoder
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import load_options
    options = load_options(osp.join(TINY, opt))
    net = build_net_from_options(osp.join(TINY, opt)).eval()
    net.load_state_dict(torch.load(root / 'experiments' / exp / 'models' / 'net_g_latest.pth')['params_ema'])
    prior = VQAutoEncoder(**TINY_VQGAN).eval()
    prior.load_state_dict(torch.load(root / options['path']['pretrain_network_hq'])['params_ema'])
    import os
    cwd = os.getcwd()
    os.chdir(root)
    try:
        ds = build_dataset(dict(options['datasets']['val'], phase='val'))
        items = [ds[i] for i in range(len(ds))]
    finally:
        os.chdir(cwd)
    lq = torch.stack([it['lq'] for it in items])
    gt = torch.stack([it['gt'] for it in items])
    with torch.no_grad():
        z = prior.encoder(gt).permute(0, 2, 3, 1)
        codebook = prior.quantize.embedding.weight
        gt_idx = torch.cdist(z.reshape(-1, z.shape[-1]).double(), codebook.double()).argmin(1).reshape(z.shape[:3])
    return net, prior, lq, gt, gt_idx


def test_codebook_analysis_matches_independent_computation(trained, tmp_path):
    assert _run(analyze_codebook, trained, 'stage2_retrain.yml', 'tiny_CodeFormer_stage2_retrain', tmp_path) == 0
    result = json.loads((tmp_path / 'codebook.json').read_text())
    net, _, lq, _, gt_idx = _independent(trained, 'stage2_retrain.yml', 'tiny_CodeFormer_stage2_retrain')
    with torch.no_grad():
        logits = net.bottleneck.logits(net.encoder(lq))
    pred = logits.argmax(-1).reshape(gt_idx.shape)
    (stats, ) = result['codebooks']
    assert result['images'] == 6 and stats['predicted'] == 'selected codes' and stats['bottleneck'] == 'index'
    assert stats['accuracy'] == pytest.approx((pred == gt_idx).double().mean().item(), abs=1e-12)
    assert stats['usage_predicted'] == pytest.approx(len(set(pred.reshape(-1).tolist())) / 64)
    assert stats['usage_ground_truth'] == pytest.approx(len(set(gt_idx.reshape(-1).tolist())) / 64)
    assert (tmp_path / 'codebook_stats.png').stat().st_size > 1000
    assert (tmp_path / 'code_frequencies.png').stat().st_size > 1000


def test_attention_analysis_matches_independent_computation(trained, tmp_path):
    assert _run(analyze_attention, trained, 'stage2_sinca.yml', 'tiny_CodeFormer_stage2_sinca', tmp_path,
                '--queries', '0.5', '0.5', '0.1', '0.9') == 0
    (result, ) = json.loads((tmp_path / 'attention.json').read_text())['codebooks']
    net, _, lq, _, _ = _independent(trained, 'stage2_sinca.yml', 'tiny_CodeFormer_stage2_sinca')
    transformer = net.bottleneck.transformer
    with torch.no_grad():
        lq_feat = net.encoder(lq)
        maps = transformer.attention_maps(lq_feat, net.quantize.embedding.weight, list(range(64)))  # all queries
    for layer, m in zip(result['layers'], maps):
        self_mass = m[..., :64].sum(-1).mean().item()  # 8x8 latent: 64 tokens, then 64 codes
        assert layer['self'] == pytest.approx(self_mass, abs=1e-5)
        assert layer['self'] + layer['codebook'] == pytest.approx(1.0, abs=1e-6)
    assert result['queries'] == [4 * 8 + 4, 0 * 8 + 7] and result['latent_hw'] == [8, 8]
    assert (tmp_path / 'attention_maps_q1.png').is_file() and (tmp_path / 'attention_split.png').is_file()
    # a bottleneck without attention is refused with a clear message
    assert _run(analyze_attention, trained, 'stage2_retrain.yml', 'tiny_CodeFormer_stage2_retrain', tmp_path) == 2


def test_gt_index_restoration_matches_independent_computation(trained, tmp_path):
    assert _run(restore_with_gt_indices, trained, 'stage2_retrain.yml', 'tiny_CodeFormer_stage2_retrain',
                tmp_path) == 0
    result = json.loads((tmp_path / 'gt_indices.json').read_text())
    net, prior, lq, gt, gt_idx = _independent(trained, 'stage2_retrain.yml', 'tiny_CodeFormer_stage2_retrain')
    from basicsr.metrics import calculate_psnr

    from basicsr_sinca.utils.inference import output2img
    with torch.no_grad():
        lq_feat, enc_feats = net.encode(lq[:1])
        codes = prior.quantize.embedding.weight[gt_idx[:1]].permute(0, 3, 1, 2)
        oracle = net.generator(codes)  # w = 0: no fusion
        model_out = net(lq[:1], w=0).image
    psnr_oracle = calculate_psnr(output2img(oracle), output2img(gt[:1]), crop_border=0)
    psnr_model = calculate_psnr(output2img(model_out), output2img(gt[:1]), crop_border=0)
    first = result['per_image'][0]
    assert first['gt_indices_psnr'] == pytest.approx(psnr_oracle, abs=1e-2)  # float32 vs float64 code search
    assert first['model_psnr'] == pytest.approx(psnr_model, abs=1e-6)
    assert result['mean']['model_psnr'] == pytest.approx(np.mean([r['model_psnr'] for r in result['per_image']]))
    assert (tmp_path / 'gt_indices.png').stat().st_size > 1000
