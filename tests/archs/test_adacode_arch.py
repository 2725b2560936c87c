"""Golden case adacode_x4: AdaCode's SR net (five codebooks mixed by the weight predictor) computes the official
function (float64): training forward, GT-aux losses, test-time padding with the weight map; the contract twin."""
import os

import pytest
import torch
from golden import GOLDEN_DIR, assert_close, load_case

from basicsr_sinca.archs.adacode_arch import AdaCodeSRNet, AdaCodeSRNet_Contrast, SinCAAdaCodeSRNet
from basicsr_sinca.losses.adacode_loss import AdaCodeContrastLoss

TINY = dict(gt_resolution=64, codebook_params=[[8, 16, 32], [8, 8, 32], [8, 16, 32], [8, 8, 32], [8, 8, 32]],
            channels={8: 64, 16: 64, 32: 32, 64: 32}, swin_opt=dict(blk_depth=1, num_heads=4, window_size=4))


def _hooks(net, store):
    handles = []
    for j, block in enumerate(net.multiscale_encoder.blocks):
        handles.append(block.register_forward_hook(lambda m, i, o, j=j: store.__setitem__(f'enc.blocks.{j}', o)))
    for k, block in enumerate(net.decoder_group):
        handles.append(block.register_forward_hook(lambda m, i, o, k=k: store.__setitem__(f'dec.{k}', o)))
    for n in range(5):
        handles.append(net.before_quant_group[n].register_forward_hook(
            lambda m, i, o, n=n: store.__setitem__(f'feat_to_quant.{n}', o)))
        handles.append(net.after_quant_group[n].register_forward_hook(
            lambda m, i, o, n=n: store.update({f'z_q.{n}': i[0], f'after_quant.{n}': o})))
        handles.append(net.bottlenecks[n].register_forward_hook(
            lambda m, i, o, n=n: store.__setitem__(f'indices.{n}', o.indices[:, None])))
    handles.append(net.multiscale_encoder.register_forward_pre_hook(
        lambda m, i: store.__setitem__('padded_input', i[0])))
    return handles


@pytest.fixture(scope='module')
def case():
    case, golden_init = load_case('adacode_x4')
    net = AdaCodeSRNet(**case['constructor']).double().eval()
    state_dict = golden_init.build_state_dict(case)
    net.load_state_dict(state_dict, strict=True)
    return case, golden_init, net, state_dict


def test_keys_are_official(case):
    case, _, net, _ = case
    with open(os.path.join(GOLDEN_DIR, 'adacode_x4.keys.tsv')) as f:
        assert list(net.state_dict()) == [line.split('\t')[0] for line in f if line.strip()]


def test_golden_calls(case):
    case, golden_init, net, _ = case
    tol = case['tolerance']['float64_run']
    inputs = {k: golden_init.make_input(**v) for k, v in case['inputs'].items()}
    gt_aux = {'indices': [inputs[f'gt_indices_src.{i}'].floor().long() for i in range(5)],
              'feat_before_quant': inputs['gt_feat_before_quant'],
              'feat_before_decoder': inputs['gt_feat_before_decoder']}
    store = {}
    handles = _hooks(net, store)
    try:
        with torch.no_grad():
            for call in case['calls']:
                store.clear()
                if call['name'] == 'forward':
                    image, losses, aux = net(inputs['x'])
                    store.update(image=image, weight=aux['weight'], feat_before_decoder=aux['feat_before_decoder'],
                                 feat_before_quant=aux['feat_before_quant'], **losses)
                    assert all(torch.equal(a, store[f'indices.{i}']) for i, a in enumerate(aux['indices']))
                elif call['name'] == 'forward_gt':
                    _, losses, _ = net(inputs['x'], gt_aux)
                    store.update(losses, **{f'gt_indices.{i}': g for i, g in enumerate(gt_aux['indices'])})
                else:
                    x = inputs[{'test': 'x', 'test_odd': 'x_odd', 'test_big': 'x_big'}[call['name']]]
                    store['image'], store['weight_map'] = net.test(x, cat_map=True)
                for key, ref in call['outputs'].items():
                    assert_close(f"{call['name']}.{key}", store[key], ref, tol)
    finally:
        for h in handles:
            h.remove()


def test_released_stage3_files_load_into_every_variant(case, tmp_path):
    """The released stage-3 files carry the contrastive loss's buffers: strict into AdaCodeSRNet_Contrast, and into
    AdaCodeSRNet / the contract twin once dropped (as upstream's inference does)."""
    case, _, net, state_dict = case
    released = dict({k: v.float() for k, v in state_dict.items()},
                    **{'contrast_cri.temperature': torch.tensor(0.5), 'contrast_cri.negatives_mask': 1 - torch.eye(16)})
    with torch.device('meta'):
        contrast = AdaCodeSRNet_Contrast(batch_size=8, **case['constructor'])
        twin = SinCAAdaCodeSRNet('nearest', **{k: v for k, v in case['constructor'].items() if k != 'AdaCode_stage'})
        official = AdaCodeSRNet(**case['constructor'])
    for module in (contrast, twin, official):
        result = module.load_state_dict(released, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys
    assert contrast.contrast_cri.negatives_mask.shape == (16, 16)


def test_contract_twin_with_five_bottlenecks():
    torch.manual_seed(0)
    specs = [{'type': 'sinca', 'num_layers': n, 'num_heads': 4} for n in (5, 4, 3, 4, 4)]
    net = SinCAAdaCodeSRNet(specs, LQ_stage=True, scale_factor=4, **TINY).eval()
    assert [len(b.transformer.layers) for b in net.bottlenecks] == [5, 4, 3, 4, 4]
    assert [tuple(c.shape) for c in net.codebooks] == [(16, 32), (8, 32), (16, 32), (8, 32), (8, 32)]
    with torch.no_grad():
        out = net(torch.rand(2, 3, 16, 16))
        maps = net.visual_maps(torch.rand(1, 3, 13, 18))['codebook weights']
    assert out.image.shape == (2, 3, 64, 64) and len(out.latents) == 5
    assert out.context['weight'].shape == (2, 5, 1, 8, 8)
    mixed = sum(out.context['weight'][:, i] * net.after_quant_group[i](o.feat) for i, o in enumerate(out.bottlenecks))
    assert torch.allclose(out.context['feat_before_decoder'], mixed)
    assert maps.shape == (1, 5, 52, 72)
    prior = net.prior_config()
    assert prior['type'] == 'AdaCodeSRNet' and prior['LQ_stage'] is False and prior['codebook_params'] == \
        TINY['codebook_params']
    with pytest.raises(ValueError, match='bottleneck: a list of 2 specs for a network with 5 codebook'):
        SinCAAdaCodeSRNet(specs[:2], **TINY)


def test_contrast_loss_equals_nt_xent_by_hand():
    torch.manual_seed(0)
    lq, hq = torch.randn(3, 8, 4, 4, dtype=torch.float64), torch.randn(3, 8, 4, 4, dtype=torch.float64)
    loss = AdaCodeContrastLoss(3).double()(lq, hq)
    feats = torch.cat([lq, hq])
    n = feats.shape[0]
    sim = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        for b in range(n):  # channel cosine at each position, averaged over the 16 positions
            sim[a, b] = torch.nn.functional.cosine_similarity(feats[a].flatten(1), feats[b].flatten(1), dim=0).mean()
    expected = 0
    for a in range(n):
        pos = sim[a, (a + 3) % n]
        expected = expected - torch.log(torch.exp(pos / 0.5) / sum(torch.exp(sim[a, k] / 0.5) for k in range(n)
                                                                  if k != a))
    assert torch.allclose(loss, expected / n)
    with pytest.raises(ValueError, match='batch of 2 samples, built for batch_size=3'):
        AdaCodeContrastLoss(3)(lq[:2], hq[:2])
