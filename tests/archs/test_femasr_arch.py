"""Golden cases femasr_hq, femasr_x4, femasr_x2: training forward, GT-index loss, test-time padding (float64)."""
import pytest
import torch
from golden import assert_close, load_case

from basicsr_sinca.archs.femasr_arch import FeMaSRNet


def _hooks(net, store):
    handles = []
    for j, block in enumerate(net.multiscale_encoder.blocks):
        handles.append(block.register_forward_hook(lambda m, i, o, j=j: store.__setitem__(f'enc.blocks.{j}', o)))
    for k, block in enumerate(net.decoder_group):
        handles.append(block.register_forward_hook(lambda m, i, o, k=k: store.__setitem__(f'dec.{k}', o)))
    handles.append(net.before_quant_group[0].register_forward_hook(
        lambda m, i, o: store.__setitem__('feat_to_quant', o)))
    handles.append(net.after_quant_group[0].register_forward_hook(lambda m, i, o: store.__setitem__('after_quant', o)))
    handles.append(net.after_quant_group[0].register_forward_hook(lambda m, i, o: store.__setitem__('z_q', i[0])))
    handles.append(net.multiscale_encoder.register_forward_pre_hook(
        lambda m, i: store.__setitem__('padded_input', i[0])))
    return handles


@pytest.mark.parametrize('name', ['femasr_hq', 'femasr_x4', 'femasr_x2'])
def test_femasr_golden(name):
    case, golden_init = load_case(name)
    net = FeMaSRNet(**case['constructor']).double().eval()
    net.load_state_dict(golden_init.build_state_dict(case), strict=True)
    assert list(net.state_dict()) == _official_order(case)  # same names, same order (incl. Swin buffers)
    tol = case['tolerance']['float64_run']
    inputs = {k: golden_init.make_input(**v) for k, v in case['inputs'].items()}
    store = {}
    handles = _hooks(net, store)
    try:
        with torch.no_grad():
            for call in case['calls']:
                store.clear()
                out = call['outputs']
                if call['name'] == 'forward':
                    image, loss, sem, indices = net(inputs['x'])
                    store.update(image=image, codebook_loss=loss, semantic_loss=sem, indices=indices[0])
                elif call['name'] == 'forward_gt':
                    gt_indices = inputs['gt_indices_src'].floor().long()
                    image, loss, sem, indices = net(inputs['x'], [gt_indices])
                    store.update(gt_indices=gt_indices, codebook_loss=loss, semantic_loss=sem)
                else:
                    x = inputs[{'test': 'x', 'test_odd': 'x_odd', 'test_big': 'x_big'}[call['name']]]
                    store['image'] = net.test(x)
                    store['indices'] = _last_indices(net, store['padded_input'])
                for key, ref in out.items():
                    assert_close(f"{call['name']}.{key}", store[key], ref, tol)
    finally:
        for h in handles:
            h.remove()


def _official_order(case):
    import os

    from golden import GOLDEN_DIR
    with open(os.path.join(GOLDEN_DIR, f"{case['case']}.keys.tsv")) as f:
        return [line.split('\t')[0] for line in f if line.strip()]


def _last_indices(net, padded):
    latents, _ = net.encode(padded)
    return net.bottlenecks[0](latents[0], net.codebooks[0]).indices[:, None]


def test_hq_prior_file_with_semantic_branch_and_targets(tmp_path):
    """The released HQ prior carries its semantic-loss branch; it loads strictly into the HQ FeMaSRNet, which is
    the teacher of the SR net (same codebook, nearest codes of the feature entering its quantiser)."""
    from helpers import TINY_FEMASR_HQ

    from basicsr_sinca.archs.femasr_arch import SinCAFeMaSRNet
    from basicsr_sinca.utils.checkpoint import load_state_dict_report
    torch.manual_seed(0)
    hq = FeMaSRNet(**TINY_FEMASR_HQ).eval()
    torch.nn.init.normal_(hq.quantize_group[0].embedding.weight)
    sd = dict(hq.state_dict(), **{'conv_semantic.0.weight': torch.zeros(8, 8, 1, 1),
                                  'vgg_feat_extractor.mean': torch.zeros(1, 3, 1, 1)})
    assert load_state_dict_report(FeMaSRNet(**TINY_FEMASR_HQ), sd, strict=True) == ''
    torch.save({'params': sd}, tmp_path / 'hq.pth')
    sr_args = {k: v for k, v in TINY_FEMASR_HQ.items() if k != 'LQ_stage'}
    sr = SinCAFeMaSRNet('nearest', LQ_stage=True, scale_factor=4, **sr_args)
    prior = sr.build_prior(str(tmp_path / 'hq.pth'))
    assert type(prior) is FeMaSRNet and not prior.LQ_stage
    gt = torch.rand(1, 3, 64, 64)
    (target, ) = prior.prior_targets(gt)
    with torch.no_grad():
        _, _, _, indices = hq(gt)  # the official forward's nearest codes
    assert torch.equal(target.indices[:, None], indices[0])


def test_use_quantize_false_reaches_every_path():
    """``use_quantize=False`` (decoder on the raw latent) holds for the official forward and the contract path."""
    from helpers import TINY_FEMASR_HQ
    torch.manual_seed(0)
    net = FeMaSRNet(use_quantize=False, **TINY_FEMASR_HQ).eval()
    quantized = FeMaSRNet(**TINY_FEMASR_HQ).eval()
    quantized.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        raw = net.decode(*net.encode(x))
        assert torch.equal(net(x)[0], raw) and torch.equal(net.restore(x).image, raw)
        assert not torch.allclose(quantized.restore(x).image, raw)
        assert torch.equal(net(x)[3][0], quantized(x)[3][0])  # the indices are the nearest codes either way


def test_index_bottleneck_position_table_covers_the_latent():
    """The index transformer's position table has one entry per latent token at the training size: the latent side
    is the codebook scale (12 here), not gt_resolution // scale (4), which only coincide at 64 px / scale 8."""
    from basicsr_sinca.archs.femasr_arch import SinCAFeMaSRNet
    torch.manual_seed(0)
    net = SinCAFeMaSRNet({'type': 'index', 'dim_embd': 32, 'n_head': 4, 'n_layers': 1}, gt_resolution=48,
                         codebook_params=[[12, 64, 32]], channels={6: 64, 12: 64, 24: 32, 48: 32, 96: 32},
                         swin_opt=dict(blk_depth=1, num_heads=4, window_size=4), scale_factor=2).eval()
    with torch.no_grad():
        out = net.restore(torch.rand(2, 3, 24, 24))
    assert out.image.shape == (2, 3, 48, 48) and out.bottlenecks[0].indices.shape[-2:] == (12, 12)
