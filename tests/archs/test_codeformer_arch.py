"""Golden cases codeformer_vqgan and codeformer: our archs compute the official functions (float64); the CodeFormer
family on the restorer contract."""
import pytest
import torch
from golden import assert_close, load_case
from helpers import TINY_VQGAN

from basicsr_sinca.archs.codeformer_arch import CodeFormer, SinCACodeFormer, VQAutoEncoder


@pytest.fixture(scope='module')
def vqgan_case():
    case, golden_init = load_case('codeformer_vqgan')
    net = VQAutoEncoder(**case['constructor']).double().eval()
    net.load_state_dict(golden_init.build_state_dict(case), strict=True)
    x = golden_init.make_input(**case['inputs']['x'])
    return case, net, x


def test_vqgan_keys_and_calls(vqgan_case):
    case, net, x = vqgan_case
    assert list(net.state_dict()) == [name for name, _ in case['parameters']]
    tol = case['tolerance']['float64_run']
    calls = {c['name']: c['outputs'] for c in case['calls']}
    with torch.no_grad():
        z = net.encoder(x)
        assert_close('encoder.z', z, calls['encoder']['z'], tol)
        quant, loss, stats = net.quantize(z)
        out = calls['quantize']
        assert_close('quantize.indices', stats['min_encoding_indices'].reshape(-1), out['indices'], tol)
        assert_close('quantize.quant', quant, out['quant'], tol)
        assert_close('quantize.codebook_loss', loss, out['codebook_loss'], tol)
        assert_close('quantize.perplexity', stats['perplexity'], out['perplexity'], tol)
        assert_close('quantize.mean_distance', stats['mean_distance'], out['mean_distance'], tol)
        image, loss, stats = net(x)
        out = calls['forward']
        assert_close('forward.indices', stats['min_encoding_indices'].reshape(-1), out['indices'], tol)
        assert_close('forward.image', image, out['image'], tol)
        assert_close('forward.codebook_loss', loss, out['codebook_loss'], tol)


@pytest.fixture(scope='module')
def codeformer_case():
    case, golden_init = load_case('codeformer')
    net = CodeFormer(**case['constructor']).double().eval()
    net.load_state_dict(golden_init.build_state_dict(case), strict=True)
    x = golden_init.make_input(**case['inputs']['x'])
    return case, golden_init, net, x


def test_codeformer_state_dict_is_official(codeformer_case):
    case, _, net, _ = codeformer_case
    assert set(net.state_dict()) == {name for name, _ in case['parameters']}
    shapes = dict(case['parameters'])
    assert all(tuple(v.shape) == tuple(shapes[k]) for k, v in net.state_dict().items())
    frozen = {n.split('.')[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {'quantize', 'generator'}


def test_codeformer_calls(codeformer_case):
    """One encoder pass (float64 at 512 px is costly): the official forward at w = 0 (its logits and lq_feat are the
    golden code_only outputs, bit-identical by the case's notes), then the generator alone for w = 0.5 with AdaIN and
    w = 1 on the same encoder output, through the restorer contract's decode."""
    case, _, net, x = codeformer_case
    tol = case['tolerance']['float64_run']
    calls = {c['name']: c for c in case['calls']}
    captured, encoded = [], []
    hook = net.generator.blocks[0].register_forward_pre_hook(lambda m, inp: captured.append(inp[0]))
    official_encode = net.encode
    net.encode = lambda lq: encoded.append(official_encode(lq)) or encoded[-1]
    try:
        with torch.no_grad():
            image, logits, lq_feat = net(x, **calls['w0']['kwargs'])
            ref = calls['code_only']['outputs']
            assert_close('code_only.indices', logits.argmax(-1).reshape(-1), ref['indices'], tol)
            assert_close('code_only.logits', logits, ref['logits'], tol)
            assert_close('code_only.lq_feat', lq_feat, ref['lq_feat'], tol)
            assert_close('w0.quant_feat', captured[0], calls['w0']['outputs']['quant_feat'], tol)
            assert_close('w0.image', image, calls['w0']['outputs']['image'], tol)
            (latents, context), = encoded
            feats = [o.feat for o in net.transform(latents)]
            for name in ('w0.5_adain', 'w1'):
                captured.clear()
                image = net.decode(feats, context, **calls[name]['kwargs'])
                assert_close(f'{name}.quant_feat', captured[0], calls[name]['outputs']['quant_feat'], tol)
                assert_close(f'{name}.image', image, calls[name]['outputs']['image'], tol)
    finally:
        hook.remove()
        del net.encode


def test_official_checkpoint_initialises_bottleneck_variants(codeformer_case, tmp_path):
    """codeformer.pth ('params_ema') loads into SinCACodeFormer: fully with the index bottleneck, all but the
    new bottleneck with SinCA."""
    case, golden_init, net, x = codeformer_case
    ckpt = tmp_path / 'codeformer.pth'
    torch.save({'params_ema': golden_init.build_state_dict(case, dtype=torch.float32)}, ckpt)
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    sd, key = read_state_dict(str(ckpt))
    assert key == 'params_ema'

    index_net = SinCACodeFormer(bottleneck='index')
    assert load_state_dict_report(index_net, sd, strict=True) == ''
    assert torch.equal(index_net.bottleneck.position_emb, sd['position_emb'])

    sinca_net = SinCACodeFormer(bottleneck={'type': 'sinca', 'num_layers': 1})
    report = load_state_dict_report(sinca_net, sd, strict=False, source='codeformer.pth')
    assert 'missing keys (bottleneck.' in report and 'unexpected keys (feat_emb.bias' in report
    assert torch.equal(sinca_net.fuse_convs_dict['32'].scale[0].weight, sd['fuse_convs_dict.32.scale.0.weight'])
    with pytest.raises(ValueError, match=r'codeformer.pth does not match SinCACodeFormer: \d+ missing keys'):
        load_state_dict_report(sinca_net, sd, strict=True, source='codeformer.pth')


def test_discriminator_layout_and_release_loading(tmp_path):
    from basicsr_sinca.archs.codeformer_arch import VQGANDiscriminator
    d = VQGANDiscriminator()
    sd = d.state_dict()
    assert len(sd) == 28 and sum(v.numel() for v in sd.values()) == 6963781  # incl. BatchNorm statistics
    assert d(torch.zeros(1, 3, 64, 64)).shape[1] == 1
    torch.save({'params_d': sd}, tmp_path / 'vqgan_discriminator.pth')
    loaded = VQGANDiscriminator(model_path=str(tmp_path / 'vqgan_discriminator.pth'))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    torch.save({'params': {k: v for k, v in sd.items() if not k.startswith('main.14')}}, tmp_path / 'short.pth')
    with pytest.raises(ValueError, match=r'does not match VQGANDiscriminator: 2 missing keys \(main.14.bias'):
        VQGANDiscriminator(model_path=str(tmp_path / 'short.pth'))


def test_prior_targets_and_build_prior(tmp_path):
    from basicsr_sinca.archs.codeformer_arch import SinCACodeFormer
    from basicsr_sinca.archs.restorer_arch import HQPrior
    torch.manual_seed(0)
    prior = VQAutoEncoder(**TINY_VQGAN).eval()
    torch.nn.init.normal_(prior.quantize.embedding.weight)
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    (target, ) = prior.prior_targets(gt)
    with torch.no_grad():
        z = prior.encoder(gt)
        _, _, stats = prior.quantize(z)  # the official quantiser's codes
    assert torch.equal(target.indices.reshape(-1), stats['min_encoding_indices'].reshape(-1))
    assert torch.equal(target.feat, prior.quantize.embedding.weight[target.indices].permute(0, 3, 1, 2))

    torch.save({'params_ema': prior.state_dict()}, tmp_path / 'prior.pth')
    net = SinCACodeFormer('nearest', connect_list=['16'], **TINY_VQGAN)
    built = net.build_prior(str(tmp_path / 'prior.pth'))
    assert isinstance(built, HQPrior) and not built.training
    assert not any(p.requires_grad for p in built.parameters())
    assert torch.equal(built.prior_targets(gt)[0].indices, target.indices)
    with pytest.raises(ValueError, match='path.pretrain_network_hq: the targets of SinCACodeFormer come from its HQ '
                                         r'prior \(VQAutoEncoder\)'):
        net.build_prior(None)
    wrong = dict(TINY_VQGAN, codebook_size=32)
    torch.save({'params_ema': VQAutoEncoder(**wrong).state_dict()}, tmp_path / 'wrong.pth')
    with pytest.raises(ValueError, match='does not match VQAutoEncoder'):
        net.build_prior(str(tmp_path / 'wrong.pth'))
    with pytest.raises(ValueError, match=r'has codebooks \[\(32, 32\)\], SinCACodeFormer has \[\(64, 32\)\]'):
        net.build_prior(str(tmp_path / 'wrong.pth'), network_opt=dict(type='VQAutoEncoder', **wrong))


@pytest.mark.parametrize('bottleneck', [
    {'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, {'type': 'sa', 'num_layers': 1, 'num_heads': 4},
    {'type': 'ca', 'num_layers': 1, 'num_heads': 4}, {'type': 'sinca_index', 'num_layers': 1, 'num_heads': 4},
    {'type': 'nearest'}, {'type': 'index', 'dim_embd': 32, 'n_head': 4, 'n_layers': 1}])
def test_every_bottleneck_in_codeformer(bottleneck):
    from basicsr_sinca.archs.codeformer_arch import SinCACodeFormer
    from helpers import TINY_VQGAN
    torch.manual_seed(0)
    net = SinCACodeFormer(bottleneck=bottleneck, connect_list=['16', '32'], **TINY_VQGAN).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net(x, w=1.0, adain=True)
        codes = net(x, code_only=True)
    assert out.image.shape == x.shape and codes.image is None
    assert out.bottlenecks[0].feat.shape == out.latents[0].shape == (2, 32, 8, 8)
    assert torch.equal(codes.bottlenecks[0].feat, out.bottlenecks[0].feat)
    if net.bottleneck.selects_codes:
        indices = out.bottlenecks[0].indices
        assert torch.allclose(out.bottlenecks[0].feat, net.codebooks[0][indices].permute(0, 3, 1, 2), atol=1e-6)
    if bottleneck['type'] != 'index':  # everything but the position table works at any size divisible by 8
        with torch.no_grad():
            assert net(torch.rand(1, 3, 96, 128), w=0.5).image.shape == (1, 3, 96, 128)


def test_patch_discriminator_spectral_norm_option():
    """VQFR's PatchGAN: ``spectral_norm=True`` normalises every conv (largest singular value ~1 after power
    iterations in training mode); the default keeps CodeFormer's plain keys."""
    from basicsr_sinca.archs.codeformer_arch import VQGANDiscriminator
    torch.manual_seed(0)
    plain, sn = VQGANDiscriminator(ndf=16, n_layers=2), VQGANDiscriminator(ndf=16, n_layers=2, spectral_norm=True)
    assert 'main.0.weight' in plain.state_dict() and 'main.0.parametrizations.weight.original' in sn.state_dict()
    x = torch.rand(2, 3, 32, 32)
    for _ in range(30):
        sn(x)
    convs = [m for m in sn.main if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        assert abs(torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item() - 1) < 0.05


def test_norm_groups_reach_every_norm_and_the_teacher(tmp_path):
    """``norm_groups`` (CodeFormer: a fixed 32) sets every GroupNorm of encoder, generator and fusion layers, leaves
    the state-dict layout unchanged, and the teacher built from the network's prior config uses it too: its targets
    equal those of a VQAutoEncoder built by hand with the same groups."""
    from basicsr_sinca.archs.codeformer_arch import SinCACodeFormer
    torch.manual_seed(0)
    config = dict(TINY_VQGAN, norm_groups=16)
    net = SinCACodeFormer('nearest', connect_list=['16'], **config)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 16 for m in norms)
    official = SinCACodeFormer('nearest', connect_list=['16'], **TINY_VQGAN)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert 'norm_groups' not in official.prior_config()  # the official configuration is written as before

    prior = VQAutoEncoder(**config).eval()
    for p in prior.parameters():  # GroupNorm's groups only matter with non-trivial statistics
        torch.nn.init.normal_(p, std=0.2)
    torch.save({'params_ema': prior.state_dict()}, tmp_path / 'prior.pth')
    built = net.build_prior(str(tmp_path / 'prior.pth'))
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(built.prior_targets(gt)[0].feat, prior.prior_targets(gt)[0].feat)
    # the same weights with CodeFormer's 32 groups encode differently: the groups are not cosmetic
    as_official = VQAutoEncoder(**TINY_VQGAN).eval()
    as_official.load_state_dict(prior.state_dict())
    with torch.no_grad():
        assert not torch.allclose(as_official.encoder(gt), prior.encoder(gt), atol=1e-3)
    with pytest.raises(ValueError, match='nf=32 must be a multiple of norm_groups=24'):
        VQAutoEncoder(**dict(TINY_VQGAN, norm_groups=24))
