"""The new baselines' own training terms, in this process, against independent computations: DAEFR's association
loss (CLIP's symmetric cross-entropy over the batch) and AdaCode's after-quant term (FeMaSR's feature loss against
the HQ model's decoder input on the GT's nearest codes)."""
from collections import OrderedDict
from os import path as osp

import torch
import torch.nn.functional as F
from helpers import REPO, model_from_options

from basicsr_sinca.utils.options import load_options

TRAIN = osp.join(REPO, 'options', 'train')


def _nearest_rows(latent, codebook):
    """(B, C, h, w) latent -> the codebook rows nearest to each position (float64 distances), (B, C, h, w)."""
    b, c, h, w = latent.shape
    flat = latent.permute(0, 2, 3, 1).reshape(-1, c).double()
    index = ((flat[:, None] - codebook.double()[None]) ** 2).sum(-1).argmin(1)
    return codebook[index].reshape(b, h, w, c).permute(0, 3, 1, 2)


def test_daefr_association_loss_is_symmetric_clip_cross_entropy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = load_options(osp.join(TRAIN, 'daefr', 'tiny', 'association.yml'))
    opt['network_g'].update(hq_codebook_path=None, lq_codebook_path=None)  # random branches
    opt['train']['association_weight'] = 0.7
    torch.manual_seed(0)
    model = model_from_options(opt, tmp_path)
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    lq = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        model.net_g.logit_scale.fill_(4.6)  # sharper than the initial log(1 / 0.07): the two directions differ more
    model.feed_data({'gt': gt, 'lq': lq})
    model.d_steps, model.current_iter, loss_dict = [], 1, OrderedDict()  # as optimize_parameters sets them
    model.generator_loss(1, loss_dict)

    net = model.net_g
    with torch.no_grad():
        f_hq = net.vqvae.quant_conv(net.vqvae.encoder(gt)['out']).flatten(1).double()
        f_lq = net.vqvae_LQ.quant_conv(net.vqvae_LQ.encoder(lq)['out']).flatten(1).double()
    f_hq = f_hq / f_hq.norm(dim=1, keepdim=True)
    f_lq = f_lq / f_lq.norm(dim=1, keepdim=True)
    logits = float(net.logit_scale.detach().exp()) * f_hq @ f_lq.t()  # row i: HQ image i against every LQ image
    hq_picks_lq = -torch.stack([logits[i, i] - logits[i].exp().sum().log() for i in range(3)]).mean()
    lq_picks_hq = -torch.stack([logits[i, i] - logits[:, i].exp().sum().log() for i in range(3)]).mean()
    assert abs(float(hq_picks_lq - lq_picks_hq)) > 1e-3  # the two directions differ on this batch
    expected = 0.7 * 0.5 * (hq_picks_lq + lq_picks_hq)
    assert torch.allclose(loss_dict['l_association'].double(), expected, rtol=1e-5, atol=0)


def _gram(x):
    b, c, h, w = x.shape
    return torch.einsum('bcn,bdn->bcd', x.reshape(b, c, -1), x.reshape(b, c, -1)) / (h * w)


def test_adacode_after_quant_term_against_the_hq_models_codes(tmp_path, monkeypatch):
    """``l_after_quant`` = w · (0.25·MSE + Gram MSE) between the SR net's decoder input and the HQ model's decoder
    input on the GT, the latter built from the GT's nearest codes in each of the five codebooks."""
    from basicsr.archs import build_network
    monkeypatch.chdir(tmp_path)
    opt = load_options(osp.join(TRAIN, 'adacode', 'tiny', 'x4_sinca.yml'))
    torch.manual_seed(0)
    with torch.device('cpu'):
        spec = {k: v for k, v in opt['network_g'].items()}
        prior = build_network(build_network(spec).prior_config())
    for q in prior.quantize_group:
        torch.nn.init.normal_(q.embedding.weight)
    prior_path = tmp_path / 'hq.pth'
    torch.save({'params': prior.state_dict()}, prior_path)
    opt['path']['pretrain_network_hq'] = str(prior_path)
    opt['train'].update(after_quant_weight=0.6, perceptual_opt=None)
    model = model_from_options(opt, tmp_path)
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 64, 64, generator=g)
    lq = F.interpolate(gt, scale_factor=0.25, mode='bilinear', align_corners=False)
    model.feed_data({'gt': gt, 'lq': lq})
    model.d_steps, model.current_iter, loss_dict = [], 1, OrderedDict()  # as optimize_parameters sets them
    model.generator_loss(1, loss_dict)

    with torch.no_grad():
        latents, context = prior.eval().encode(gt)
        codes = [_nearest_rows(z, q.embedding.weight) for z, q in zip(latents, prior.quantize_group)]
        hq_in = prior.combine_codes(codes, context).double()
    ours = model.last_output.context['feat_before_decoder'].detach().double()
    expected = 0.6 * (0.25 * (hq_in - ours).square().mean() + (_gram(ours) - _gram(hq_in)).square().mean())
    assert torch.allclose(loss_dict['l_after_quant'].double(), expected, rtol=1e-4, atol=0)
