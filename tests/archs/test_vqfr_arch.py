"""Golden cases vqfr_v2 and vqfr_vqgan_v2 (float64): the official VQFR v2 network and its VQGAN v2 prior, loaded
strictly from BasicSR-format files; the contract twin SinCAVQFRv2 and the feat2index bottleneck."""
import pytest
import torch
from golden import compare_call, load_basicsr_release, run_with_hooks

from basicsr_sinca.archs.vqfr_arch import SinCAVQFRv2, VQFRv2, VQGANv2

TINY = dict(base_channels=32, channel_multipliers=[1, 2], num_enc_blocks=1, num_dec_blocks=1, code_dim=32,
            inpfeat_dim=32, quantizer_opt={'type': 'L2VectorQuantizer', 'num_code': 16, 'code_dim': 32,
                                           'spatial_size': [8, 8]})


def test_golden_vqfr_v2(tmp_path):
    case, golden_init, net = load_basicsr_release('vqfr_v2', VQFRv2, tmp_path)
    captured = {}
    net.decoder.register_forward_pre_hook(lambda m, args: captured.__setitem__('quant_feat', args[0]))
    x = golden_init.make_input(**case['inputs']['x_lq'])
    res, seen = run_with_hooks(net, case['calls'][0]['outputs'], lambda: net(x, **case['calls'][0]['kwargs']))
    assert set(res) == {'enc_feat', 'quant_logit', 'texture_dec', 'main_dec'}
    compare_call('vqfr_v2', case, dict(res, quant_index=res['quant_logit'].argmax(-1), **captured), seen)
    # the official network freezes nothing itself (VQFR's training model picks what to optimise)
    assert all(p.requires_grad for p in net.parameters())


def test_golden_vqgan_v2(tmp_path):
    case, golden_init, net = load_basicsr_release('vqfr_vqgan_v2', VQGANv2, tmp_path)
    x = golden_init.make_input(**case['inputs']['x'])
    (res, emb_loss), seen = run_with_hooks(net, case['calls'][0]['outputs'], lambda: net(x, return_keys=('dec', )),
                                            extra=['encoder'])
    compare_call('vqfr_vqgan_v2', case, dict(res, emb_loss=emb_loss, enc_feat=seen['encoder']), seen)


def test_vqgan_v2_prior_targets():
    """The prior's targets are the codes its own forward picks for the HQ image."""
    net = VQGANv2(**{k: v for k, v in TINY.items() if k != 'inpfeat_dim'}).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        (target, ) = net.prior_targets(x)
        res, _ = net(x)
    assert torch.equal(target.indices.reshape(2, -1), res['quant_index'])
    assert torch.allclose(target.feat, res['quant_feat'], atol=1e-6)


def test_vqgan_v2_codebook_loss_value_and_gradients():
    """VQFR's quantiser loss: 1.25·MSE in value; the encoder side (commitment) weighs 1, the codebook side 0.25 —
    checked on the gradients, position by position in float64, since both terms have the same value."""
    torch.manual_seed(0)
    net = VQGANv2(**{k: v for k, v in TINY.items() if k != 'inpfeat_dim'}).double()
    codebook = net.quantizer.embedding.weight
    torch.nn.init.normal_(codebook)
    z = torch.randn(2, 32, 3, 4, dtype=torch.float64, requires_grad=True)
    quant, loss, indices = net.quantize(z)
    loss.backward()
    n = z.numel()
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 32)
    index = torch.stack([((codebook.detach() - row) ** 2).sum(1).argmin() for row in flat])
    assert torch.equal(indices.reshape(-1), index) and len(index.unique()) > 1
    nearest = codebook.detach()[index]
    assert torch.allclose(loss, 1.25 * ((nearest - flat) ** 2).sum() / n, rtol=1e-12)
    grad_z = (2 * (flat - nearest) / n).reshape(2, 3, 4, 32).permute(0, 3, 1, 2)
    assert torch.allclose(z.grad, grad_z, rtol=1e-10, atol=1e-15)  # weight 1 (the straight-through adds nothing)
    grad_codebook = torch.zeros_like(codebook)
    for row, k in zip(flat, index):
        grad_codebook[k] += 0.25 * 2 * (codebook.detach()[k] - row) / n
    assert torch.allclose(codebook.grad, grad_codebook, rtol=1e-10, atol=1e-15)
    assert torch.equal(quant, z + (nearest.reshape(2, 3, 4, 32).permute(0, 3, 1, 2) - z).detach())


def test_contract_twin_and_prior():
    torch.manual_seed(0)
    official = VQFRv2(**TINY).eval()
    twin = SinCAVQFRv2('feat2index', **TINY).eval()
    twin.load_state_dict(official.state_dict(), strict=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = official(x, fidelity_ratio=0.3)
        out = twin(x, fidelity_ratio=0.3)
        plain = twin(x, fidelity_ratio=0.0)
    assert torch.allclose(out.image, ref['main_dec']) and torch.equal(out.context['texture_dec'], ref['texture_dec'])
    assert torch.allclose(plain.image, plain.context['texture_dec'], atol=1e-6)  # ratio 0: the texture branch alone
    assert out.bottlenecks[0].logits.shape == (2, 64, 16) and twin.img_size == 16
    assert twin.prior_config() == dict(type='VQGANv2', **twin.vqgan_config)
    prior = VQGANv2(**{k: v for k, v in twin.prior_config().items() if k != 'type'})
    assert prior.load_state_dict(twin.state_dict(), strict=False).unexpected_keys  # the prior is a key subset
    frozen = {n.split('.')[0] for n, p in twin.named_parameters() if not p.requires_grad}
    assert frozen == {'quantizer', 'decoder'}
    # the texture decoder sits under no_grad: the encoder learns only through the bottleneck's own losses
    sinca = SinCAVQFRv2({'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, **TINY)
    sinca(x).image.mean().backward()
    assert sinca.encoder.conv_in.weight.grad is None and sinca.inpfeat_extraction.weight.grad is not None
    with pytest.raises(ValueError, match='quantizer_opt: unknown keys'):
        VQFRv2(**dict(TINY, quantizer_opt={'num_codes': 16}))
    with pytest.raises(ValueError, match='code_selection_mode'):
        VQFRv2(code_selection_mode='predict')


def test_released_v2_predicts_codes_at_other_sizes():
    """Upstream reshapes the predicted indices with the hard-coded spatial_size (16 rows), so its 'Predict' mode fails
    unless the input is 512x512; ours takes the grid the encoder gives (released constructor, 64x64 and 96x64)."""
    torch.manual_seed(0)
    net = VQFRv2(quantizer_opt={'type': 'L2VectorQuantizer', 'num_code': 1024, 'code_dim': 256,
                                'spatial_size': [16, 16]}).eval()
    for h, w in ((64, 64), (96, 64)):
        with torch.no_grad():
            res = net(torch.rand(1, 3, h, w) * 2 - 1, fidelity_ratio=0.1)
        assert res['quant_logit'].shape == (1, h // 32 * w // 32, 1024) and res['main_dec'].shape == (1, 3, h, w)
        assert torch.isfinite(res['main_dec']).all()
