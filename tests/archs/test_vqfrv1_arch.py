"""Golden case vqfr_v1 (float64, 128x128): the official VQFR v1 network loaded strictly from a BasicSR-format file;
the VQGAN v1 prior as a key subset; the contract twin SinCAVQFRv1; option checks."""
import pytest
import torch
from golden import compare_call, load_basicsr_release, run_with_hooks

from basicsr_sinca.archs.vqfrv1_arch import SinCAVQFRv1, VQFRv1, VQGANv1

TINY = dict(base_channels=32, resolution_scale_rates=[1, 2], channel_multipliers=[1, 2], proj_patch_size=2,
            encoder_num_blocks=1, decoder_num_blocks=1, align_from_patch=2,
            quantizer_opt={'Level_2': {'in_dim': 64, 'num_code': 16, 'code_dim': 32}})


def test_golden_vqfr_v1(tmp_path):
    case, golden_init, net = load_basicsr_release('vqfr_v1', VQFRv1, tmp_path)
    x = golden_init.make_input(**case['inputs']['x_lq'])
    call = case['calls'][0]
    res, seen = run_with_hooks(net, call['outputs'], lambda: net(x, **call['kwargs']))
    feats = res['feat_dict']['Level_32']
    codebook = net.quantizer.quantize_dict.Level_32.embedding.weight
    # the index is not returned upstream: recomputed from z_conv like the case, and the quantized latent must be
    # exactly those rows
    index = torch.cdist(feats['z_conv'].flatten(2).transpose(1, 2), codebook[None]).argmin(-1)
    assert torch.allclose(feats['z_quant_before_conv'].flatten(2).transpose(1, 2), codebook[index], atol=1e-12)
    compare_call('vqfr_v1', case, dict(res, **feats, quant_index=index), seen)
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == ['quantizer.quantize_dict.Level_32.embedding.weight']  # fix_keys ['embedding']


def test_prior_is_a_key_subset_and_gives_the_targets():
    torch.manual_seed(0)
    twin = SinCAVQFRv1('nearest', img_size=8, **TINY).eval()
    prior = VQGANv1(**{k: v for k, v in twin.prior_config().items() if k != 'type'}).eval()
    result = prior.load_state_dict(twin.state_dict(), strict=False)
    assert result.missing_keys == [] and all(k.startswith(('inpfeat', 'main_decoder')) for k in result.unexpected_keys)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        (target, ) = prior.prior_targets(x)
        res, _ = prior(x)
        out = twin.restore(x)
    assert torch.equal(target.indices.reshape(2, -1), res['quant_index'])
    assert torch.allclose(out.context['texture_dec'], res['dec'], atol=1e-6)  # same weights, same texture path
    assert out.image.shape == (2, 3, 8, 8)


def test_twin_trains_what_it_is_told():
    twin = SinCAVQFRv1({'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, img_size=8, **TINY,
                       fix_keys=['embedding', 'post_quant_conv', 'decoder.', 'main_decoder', 'inpfeat_extraction'])
    trainable = {n.split('.')[0] for n, p in twin.named_parameters() if p.requires_grad}
    assert trainable == {'encoder', 'quantizer', 'bottleneck'}
    assert not twin.quantizer.level.post_quant_conv.weight.requires_grad
    twin(torch.rand(1, 3, 8, 8) * 2 - 1).image.mean().backward()
    assert twin.encoder.conv_in.weight.grad is not None
    assert twin.quantizer.level.quant_conv.weight.grad is not None


@pytest.mark.parametrize('change, message', [
    ({'quant_level': ['Level_1']}, 'quant_level'),
    ({'proj_patch_size': 4}, 'proj_patch_size'),
    ({'quantizer_opt': {'Level_2': {'in_dim': 64, 'num_codes': 16}}}, 'unknown keys'),
    ({'align_opt': {'Level_2': {'cond_downscale_rate': 4}, 'Level_1': {}}}, 'cond_downscale_rate'),
])
def test_option_errors_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        VQFRv1(**dict(TINY, **change))


def test_kmeans_finds_separated_clusters():
    from basicsr_sinca.archs.vqfrv1_arch import kmeans
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = (centres[torch.arange(300) % 3] + 0.1 * torch.randn(300, 2, generator=g))
    found = kmeans(samples, 3, generator=g)
    assert torch.cdist(found, centres).min(1).values.max() < 0.1  # every found centre is a true one
    assert torch.cdist(centres, found).min(1).values.max() < 0.1  # and every true one is found
    with pytest.raises(ValueError, match='2 samples for 3 clusters'):
        kmeans(samples[:2], 3)


def test_kmeans_quantizer_schedule_in_training_mode_only():
    """Warm-up passes the latent through; the codebook is re-estimated from the reservoir every reestimate_iters
    training forwards up to reestimate_maxiters; eval mode has no side effect."""
    from basicsr_sinca.archs.vqfrv1_arch import VQFRv1Quantizer
    torch.manual_seed(0)
    q = VQFRv1Quantizer(8, num_code=4, code_dim=2, reservoir_size=64, reestimate_iters=2, reestimate_maxiters=4,
                        warmup_iters=1)
    assert 'reservoir' not in q.state_dict()  # non-persistent, as upstream
    z = torch.randn(2, 2, 4, 4) * 0.1 + 5.0  # latents far from the N(0, 1) codebook
    quant, loss, idx = q.train()(z)
    assert quant is z and float(loss) == 0 and idx is None and q.reservoir.shape == (32, 2)  # warm-up
    before = q.embedding.weight.clone()
    q(z)  # step 2: re-estimated on the reservoir -> codes where the latents are
    assert not torch.equal(before, q.embedding.weight) and (q.embedding.weight - 5.0).abs().max() < 0.5
    assert q.reservoir.shape == (64, 2)
    q.embedding.weight.data.normal_()
    moved = q.embedding.weight.clone()
    q(z), q(z)  # steps 3, 4: step 4 re-estimates
    assert not torch.equal(moved, q.embedding.weight)
    q.embedding.weight.data.normal_()
    moved = q.embedding.weight.clone()
    q(z), q(z)  # steps 5, 6: step 6 is past reestimate_maxiters
    q.eval()(z)  # eval: no schedule
    assert q.train_steps == 6 and torch.equal(moved, q.embedding.weight)
