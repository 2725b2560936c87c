"""Golden case daefr: DAEFR's final network computes the official function (float64), loaded from a
Lightning-format checkpoint; the contract twin SinCADAEFR computes the same restoration."""
import pytest
import torch
from golden import assert_close, load_case

from basicsr_sinca.archs.daefr_arch import DAEFR, SinCADAEFR

TINY_DDCONFIG = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], resolution=32, z_channels=32,
                     embed_dim=32, n_embed=16)
TINY_INDEX = dict(dim_embd=32, n_head=4, n_layers=1)


@pytest.fixture(scope='module')
def case(tmp_path_factory):
    from fake_lightning import ModelCheckpoint

    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    case, golden_init = load_case('daefr')
    official = golden_init.build_state_dict(case)
    path = tmp_path_factory.mktemp('daefr') / 'DAEFR_model.ckpt'
    torch.save({'epoch': 99, 'global_step': 1, 'pytorch-lightning_version': '1.0.8', 'state_dict': official,
                'callbacks': {ModelCheckpoint: {}}}, path)
    state_dict, used = read_state_dict(str(path))
    assert used == 'state_dict (Lightning; 0 loss.* keys dropped)'
    net = DAEFR(**case['constructor']).double().eval()
    assert load_state_dict_report(net, state_dict, strict=True, source=str(path)) == ''
    return case, golden_init, net


def test_keys_are_official(case):
    case, golden_init, net = case
    sd = net.state_dict()
    assert set(sd) == {name for name, _ in case['parameters']} and len(sd) == 877
    shapes = dict(case['parameters'])
    assert all(tuple(v.shape) == tuple(shapes[k]) for k, v in sd.items())
    # the contract twin with DAEFR's own transformer takes the official file as it is
    official = golden_init.build_state_dict(case, dtype=torch.float32)
    with torch.device('meta'):
        twin = SinCADAEFR('index')
    result = twin.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_golden_forward(case):
    case, golden_init, net = case
    tol = case['tolerance']['float64_run']
    lq, gt = (golden_init.make_input(**case['inputs'][k]) for k in ('lq', 'gt'))
    seen = {}
    hooks = [net.vqvae.Fixed_quant_conv.register_forward_hook(lambda m, i, o: seen.setdefault('h_gt', o)),
             net.vqvae.HQ_quant_conv.register_forward_hook(lambda m, i, o: seen.setdefault('z_h', o)),
             net.cross_attention.register_forward_hook(lambda m, i, o: seen.setdefault('fused', o)),
             net.bottleneck.idx_pred_layer.register_forward_hook(lambda m, i, o: seen.setdefault('logits', o))]
    try:
        with torch.no_grad():
            dec, bce, l2, z_info, z_hs, z_l, quant_z, codebook = net(lq, gt)
            quant_gt, _, gt_info = net.vqvae.Fixed_quantize(seen['h_gt'])  # encode_to_gt's quantisation
    finally:
        for h in hooks:
            h.remove()
    calls = {c['name']: c['outputs'] for c in case['calls']}
    logits = seen['logits'].permute(1, 0, 2)
    for name, value in (('h_gt', seen['h_gt']), ('quant_gt', quant_gt), ('gt_indices', gt_info[2].reshape(-1))):
        assert_close(f'encode_to_gt.{name}', value, calls['encode_to_gt'][name], tol)
    for name, value in (('dec', dec), ('BCE_loss', bce), ('L2_loss', l2), ('z_l', z_l), ('z_h', seen['z_h']),
                        ('fused', seen['fused']), ('logits', logits), ('pred_indices', logits.argmax(-1).reshape(-1)),
                        ('z_indices', z_info[2].reshape(-1)), ('quant_z', quant_z)):
        assert_close(f'forward.{name}', value, calls['forward'][name], tol)
    assert codebook is net.vqvae.Fixed_quantize.embedding.weight and set(z_hs) >= {'out', 'mid_atten'}


def _tiny_pair():
    torch.manual_seed(0)
    official = DAEFR(TINY_DDCONFIG, **TINY_INDEX).eval()
    for p in official.parameters():
        torch.nn.init.normal_(p, std=0.1)
    twin = SinCADAEFR(dict(TINY_INDEX, type='index'), TINY_DDCONFIG).eval()
    twin.load_state_dict(official.state_dict(), strict=True)
    return official, twin


def test_contract_twin_restores_like_the_official_forward():
    official, twin = _tiny_pair()
    lq, gt = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        dec, bce, l2, *_ = official(lq, gt)
        out = twin.restore(lq)
        (target, ) = twin.prior_targets(gt)
    assert torch.allclose(out.image, dec, atol=1e-5)
    logits = out.bottlenecks[0].logits
    assert torch.allclose(bce, torch.nn.functional.cross_entropy(logits.reshape(-1, 16), target.indices.reshape(-1)))
    assert torch.allclose(l2, (out.latents[0] - target.feat).square().mean())
    assert twin.build_prior() is twin  # the targets come from the network's own fixed encoder and codebook
    with pytest.raises(ValueError, match='carries its own HQ prior'):
        twin.build_prior('prior.pth')


def test_unprefixed_autoencoder_keys_are_filled_as_upstream():
    official, twin = _tiny_pair()
    sd = {(k[len('vqvae.'):] if k.startswith('vqvae.') else k): v for k, v in official.state_dict().items()}
    fresh = SinCADAEFR(dict(TINY_INDEX, type='index'), TINY_DDCONFIG)
    fresh.load_state_dict(sd, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in twin.state_dict().items())


@pytest.mark.parametrize('bottleneck', [{'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, 'nearest',
                                        {'type': 'sinca_index', 'num_layers': 1, 'num_heads': 4}])
def test_every_bottleneck_on_the_fused_latent(bottleneck):
    net = SinCADAEFR(bottleneck, TINY_DDCONFIG).eval()
    frozen = {n.split('.')[1] for n, p in net.named_parameters() if not p.requires_grad and n.startswith('vqvae.')}
    assert frozen == {'decoder', 'post_quant_conv', 'Fixed_quantize', 'HQ_quantize', 'LQ_quantize', 'Fixed_encoder',
                      'Fixed_quant_conv'}
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32) * 2 - 1)
        assert out.image.shape == (1, 3, 32, 32) and out.bottlenecks[0].feat.shape == (1, 32, 16, 16)
    with pytest.raises(ValueError, match='must be \\(B, 3, H, W\\) with H and W divisible by 2'):
        net(torch.rand(1, 3, 31, 32))


def _stage_files(root):
    """A random HQ codebook (stage 1, codebook ~ N(0, 1)) and a random association (stage 2) file, BasicSR layout."""
    from basicsr_sinca.archs.daefr_arch import DAEFRAssociation
    from basicsr_sinca.archs.vqvaegan_arch import VQVAEGAN
    torch.manual_seed(1)
    hq = VQVAEGAN(**TINY_DDCONFIG)
    torch.nn.init.normal_(hq.quantize.embedding.weight)
    torch.manual_seed(2)
    assoc = DAEFRAssociation(TINY_DDCONFIG)
    paths = root / 'hq_codebook.pth', root / 'association.pth'
    for net, path in zip((hq, assoc), paths):
        torch.save({'params': net.state_dict()}, path)
    return hq, [str(p) for p in paths]


def test_targets_are_the_fixed_codebooks_codes_of_the_gt(tmp_path):
    """The final stage's targets are the codes the stage-1 HQ codebook model itself picks for the GT (its own forward),
    not those of the association-trained HQ branch the network also carries."""
    hq, (hq_path, _) = _stage_files(tmp_path)
    torch.manual_seed(3)
    net = SinCADAEFR({'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, TINY_DDCONFIG, hq_codebook_path=hq_path).eval()
    gt = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        (target, ) = net.build_prior().prior_targets(gt)
        expected = hq.eval()(gt)[2][2].reshape(3, 16, 16)  # the stage-1 model's own quantiser
        branch = net.vqvae.HQ_quant_conv(net.vqvae.HQ_encoder(gt)['out'])
    assert torch.equal(target.indices, expected)
    assert torch.equal(target.feat, hq.quantize.embedding.weight[expected].permute(0, 3, 1, 2))
    flat = branch.permute(0, 2, 3, 1).reshape(-1, 32)
    other = torch.cdist(flat, hq.quantize.embedding.weight).argmin(1).reshape(3, 16, 16)
    assert not torch.equal(other, expected)  # the HQ branch would give other targets: the check can fail


def test_stage_files_initialise_exactly_their_parts(tmp_path):
    """``hq_codebook_path`` / ``association_path`` put each part of the stage files where DAEFR's final stage takes
    it from, compared key by key with the files."""
    _, (hq_path, assoc_path) = _stage_files(tmp_path)
    hq, assoc = (torch.load(p, map_location='cpu')['params'] for p in (hq_path, assoc_path))
    net = SinCADAEFR('nearest', TINY_DDCONFIG, hq_codebook_path=hq_path, association_path=assoc_path)
    ours = net.state_dict()
    parts = {'Fixed_encoder': (hq, 'encoder'), 'Fixed_quant_conv': (hq, 'quant_conv'),
             'Fixed_quantize': (hq, 'quantize'), 'decoder': (hq, 'decoder'), 'post_quant_conv': (hq, 'post_quant_conv'),
             'HQ_encoder': (assoc, 'vqvae.encoder'), 'HQ_quant_conv': (assoc, 'vqvae.quant_conv'),
             'HQ_quantize': (assoc, 'vqvae.quantize'), 'encoder': (assoc, 'vqvae_LQ.encoder'),
             'quant_conv': (assoc, 'vqvae_LQ.quant_conv'), 'LQ_quantize': (assoc, 'vqvae_LQ.quantize')}
    for part, (source, prefix) in parts.items():
        keys = [k for k in source if k.startswith(prefix + '.')]
        assert keys, part
        for k in keys:
            assert torch.equal(ours[f'vqvae.{part}' + k[len(prefix):]], source[k]), (part, k)
    # the two association branches differ, so a swapped pair cannot pass
    assert not torch.equal(assoc['vqvae.encoder.conv_in.weight'], assoc['vqvae_LQ.encoder.conv_in.weight'])
