"""A restorer that implements the contract and nothing else (tests/toy_restorer.py: two codebooks of different
sizes) trains through the entry point with a list of bottlenecks, logs per-codebook losses, and all three
analysis scripts run on it."""
import json
import re
import sys
from os import path as osp

import pytest
import torch
from helpers import REPO, logged_values, make_toy_workdir, read_train_log, run_cmd, toy_options, write_yaml

sys.path.insert(0, osp.join(REPO, 'scripts'))
import analyze_attention  # noqa: E402
import analyze_codebook  # noqa: E402
import restore_with_gt_indices  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_e2e')
    make_toy_workdir(str(root))
    opt_file = write_yaml(root / 'toy.yml', toy_options(root, 'toy_two_codebooks', total_iter=6))
    run_cmd([sys.executable, osp.join(REPO, 'tests', 'toy_train.py'), '-opt', opt_file], cwd=root)
    return root, opt_file, str(root / 'experiments' / 'toy_two_codebooks' / 'models' / 'net_g_latest.pth')



def test_trains_through_the_entry_point_with_per_codebook_losses(trained):
    root, _, ckpt = trained
    log = read_train_log(root / 'experiments' / 'toy_two_codebooks')
    for key in ('l_feat_match_c0', 'l_feat_lq_c0', 'l_feat_lq_c1', 'l_pix'):
        assert len(logged_values(log, key)) == 6, key
    assert 'l_feat_match_c1' not in log and 'l_ce' not in log  # codebook 1 is 'nearest'
    assert re.search(r'# psnr: [\d.]+', log)
    prior = torch.load(root / 'toy_prior.pth', map_location='cpu')['params']
    for key in ('params', 'params_ema'):
        sd = torch.load(ckpt, map_location='cpu')[key]
        assert torch.equal(sd['codebook.1.weight'], prior['codebook.1.weight'])  # frozen codebooks
        assert not torch.equal(sd['encoder.0.weight'], prior['encoder.0.weight'])  # trained encoder
        assert any(k.startswith('bottleneck.0.transformer.') for k in sd)


def _run(script, trained, out, *extra):
    _, opt_file, ckpt = trained
    return script.main(['--opt', opt_file, '--model_path', ckpt, '-o', str(out), *extra])


def _independent(trained):
    """Network, prior and the validation images rebuilt by hand."""
    from basicsr.data import build_dataset
    from toy_restorer import ToyPrior, ToyRestorer

    from basicsr_sinca.utils.options import load_options
    _, opt_file, ckpt = trained
    opt = load_options(opt_file)
    net = ToyRestorer(opt['network_g']['bottleneck']).eval()
    net.load_state_dict(torch.load(ckpt, map_location='cpu')['params_ema'])
    prior = ToyPrior().eval()
    prior.load_state_dict(torch.load(opt['path']['pretrain_network_hq'], map_location='cpu')['params'])
    ds = build_dataset(dict(opt['datasets']['val'], phase='val'))
    items = [ds[i] for i in range(len(ds))]
    return net, prior, torch.stack([it['lq'] for it in items]), torch.stack([it['gt'] for it in items])


def test_codebook_analysis_per_codebook(trained, tmp_path):
    assert _run(analyze_codebook, trained, tmp_path) == 0
    result = json.loads((tmp_path / 'codebook.json').read_text())
    c0, c1 = result['codebooks']
    assert (c0['size'], c0['bottleneck'], c1['size'], c1['bottleneck']) == (24, 'sinca', 40, 'nearest')
    assert c0['predicted'] == 'nearest codes of the continuous output' and c1['predicted'] == 'selected codes'
    net, prior, lq, gt = _independent(trained)
    with torch.no_grad():
        z_lq, z_gt = net.encode_hq(lq)[1], prior.encode_hq(gt)[1]

    def nearest(z, codebook):
        return torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double(), codebook.double()).argmin(1)

    pred, target = nearest(z_lq, net.codebooks[1]), nearest(z_gt, prior.codebooks[1])
    assert c1['accuracy'] == pytest.approx((pred == target).double().mean().item(), abs=1e-12)
    assert c1['usage_ground_truth'] == pytest.approx(len(set(target.tolist())) / 40)
    assert result['images'] == 6 and len(result['per_image'][0]['accuracy']) == 2
    assert (tmp_path / 'code_frequencies.png').stat().st_size > 1000


def test_attention_analysis_only_on_the_attention_codebook(trained, tmp_path):
    assert _run(analyze_attention, trained, tmp_path, '--queries', '0.5', '0.5') == 0
    (c0, ) = json.loads((tmp_path / 'attention.json').read_text())['codebooks']
    assert c0['codebook'] == 0 and c0['latent_hw'] == [16, 16] and c0['queries'] == [8 * 16 + 8]
    net, _, lq, _ = _independent(trained)
    with torch.no_grad():
        maps = net.bottlenecks[0].attention_maps(net.encode(lq)[0][0], net.codebooks[0], list(range(256)))
    assert c0['layers'][0]['self'] == pytest.approx(maps[0][..., :256].sum(-1).mean().item(), abs=1e-5)
    assert (tmp_path / 'attention_maps_c0_q0.png').is_file() and (tmp_path / 'attention_split.png').is_file()


def test_gt_index_restoration_replaces_every_codebook(trained, tmp_path):
    assert _run(restore_with_gt_indices, trained, tmp_path) == 0
    result = json.loads((tmp_path / 'gt_indices.json').read_text())
    net, prior, _, gt = _independent(trained)
    from basicsr.metrics import calculate_psnr

    from basicsr_sinca.utils.inference import output2img
    with torch.no_grad():
        oracle = net.decode([t.feat for t in prior.prior_targets(gt[:1])])
    psnr = calculate_psnr(output2img(oracle, (0, 1)), output2img(gt[:1], (0, 1)), crop_border=0)
    assert result['bottlenecks'] == ['sinca', 'nearest']
    assert result['per_image'][0]['gt_indices_psnr'] == pytest.approx(psnr, abs=1e-6)
    assert _run(restore_with_gt_indices, trained, tmp_path, '--decode', 'w=0.5') == 2  # the toy has no options
