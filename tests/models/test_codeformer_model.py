"""CodeFormer's stage models in this process, against independent computations: the teacher's targets come from
the GT batch, stage 3 runs the network at the scheduled w, and the adaptive GAN weight is the clamped ratio of
gradient norms at the documented layer."""
from collections import OrderedDict
from os import path as osp

import pytest
import torch
from helpers import REPO, make_tiny_codeformer_workdir, model_from_options

from basicsr_sinca.utils.options import load_options

TINY = osp.join(REPO, 'options', 'train', 'codeformer', 'tiny')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('codeformer_models')
    make_tiny_codeformer_workdir(str(root))
    return root


def _model(root, monkeypatch, stage, **train):
    monkeypatch.chdir(root)  # the option files name the tiny prior relative to the working directory
    opt = load_options(osp.join(TINY, f'{stage}.yml'))
    opt['path']['pretrain_network_g'] = None
    opt['train'].update(train)
    torch.manual_seed(0)
    return model_from_options(opt, root)


def _batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    lq = (gt + 0.5 * torch.randn(2, 3, 64, 64, generator=g)).clamp(-1, 1)
    return {'lq': lq, 'lq_large': lq.flip(-1), 'gt': gt}


def _nearest(latent, codebook):
    flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
    return torch.cdist(flat.double(), codebook.double()).argmin(1).reshape(latent.shape[0], *latent.shape[2:])


def test_stage2_targets_are_the_priors_codes_of_the_gt(root, monkeypatch):
    model = _model(root, monkeypatch, 'stage2_sinca')
    seen = []
    original = model.code_losses
    monkeypatch.setattr(model, 'code_losses', lambda output, targets, loss_dict: seen.append(targets) or
                        original(output, targets, loss_dict))
    batch = _batch(model)
    model.feed_data(batch)
    model.optimize_parameters(1)
    (target, ) = seen[0]
    with torch.no_grad():
        (gt_latent, ) = model.prior.encode_hq(batch['gt'])
        (lq_latent, ) = model.prior.encode_hq(batch['lq'])
    codebook = model.prior.codebooks[0]
    assert torch.equal(target.indices, _nearest(gt_latent, codebook))
    assert not torch.equal(target.indices, _nearest(lq_latent, codebook))  # the LQ would give other codes
    assert torch.equal(target.feat, codebook[target.indices].permute(0, 3, 1, 2))


@pytest.mark.parametrize('w', [0.0, 0.7, 1.3])
def test_stage3_runs_the_network_at_the_scheduled_w(root, monkeypatch, w):
    model = _model(root, monkeypatch, 'stage3_sinca', fidelity_schedule=[[None, w, 1]] if w else [[None, 0.0, 0]],
                   net_d_start_iter=100)
    calls = []
    net = model.get_bare_model(model.net_g)
    original = net.forward
    monkeypatch.setattr(net, 'forward', lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    model.feed_data(_batch(model))
    model.optimize_parameters(3)
    (kwargs, ) = calls
    if w:
        assert kwargs.get('w') == w and not kwargs.get('code_only')
    else:
        assert kwargs.get('code_only') is True  # a code-only pass on the large degradation
    assert model.log_dict['w'] == pytest.approx(w)


def test_stage3_adaptive_gan_weight_is_the_clamped_gradient_ratio(root, monkeypatch):
    """d_weight = clamp(|grad L_rec| / (|grad L_gan| + 1e-4), 0, 1) · scale at the last conv of the highest-resolution
    fusion layer, recomputed here from the network's output on the same batch."""
    model = _model(root, monkeypatch, 'stage3_sinca', fidelity_schedule=[[None, 1.0, 1]], net_d_start_iter=0,
                   scale_adaptive_gan_weight=0.3)
    batch = _batch(model, seed=1)
    model.feed_data(batch)
    net = model.get_bare_model(model.net_g)
    last = net.fuse_convs_dict[max(net.connect_list, key=int)].shift[-1].weight
    out = net(model.lq, w=1.0).image
    recon = model.cri_pix(out, model.gt) + model.cri_perceptual(out, model.gt)
    gan = model.cri_gan(model.net_d(out), True, is_disc=False)
    g_rec = torch.autograd.grad(recon, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last)[0]
    expected = 0.3 * min(1.0, (g_rec.norm() / (g_gan.norm() + 1e-4)).item())
    loss_dict = OrderedDict()
    model.d_steps = []  # what optimize_parameters sets up before the generator's loss
    model.generator_loss(1, loss_dict)
    assert loss_dict['d_weight'].item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(0.3) and expected != pytest.approx(0.1)


def test_fidelity_schedule_refuses_full_passes_at_w_0_and_needs_an_open_end():
    """Full passes at w = 0 leave the fusion layers without gradient (upstream's crash at iteration 120k): refused;
    the last entry must be open-ended."""
    from basicsr_sinca.models.codeformer_model import OFFICIAL_FIDELITY_SCHEDULE, parse_fidelity_schedule
    assert parse_fidelity_schedule(OFFICIAL_FIDELITY_SCHEDULE)[2] == (120000, 0.0, 0)
    with pytest.raises(ValueError, match=r'fidelity_schedule\[1\]: full passes with w = 0'):
        parse_fidelity_schedule([[10, 1.0, 1], [20, 0.0, 1], [None, 1.3, 1]])
    with pytest.raises(ValueError, match='the last entry must have until_iter ~'):
        parse_fidelity_schedule([[10, 1.0, 1]])
    with pytest.raises(ValueError, match=r'fidelity_schedule\[0\]: expected'):
        parse_fidelity_schedule([[None, -1.0, 1]])
