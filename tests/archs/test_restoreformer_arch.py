"""Golden cases restoreformer and restoreformer_hqdict (float64): RestoreFormer's MHCA network and its HQ
dictionary (the taming VQVAEGAN with 8 heads), loaded from Lightning-format files; the contract twin."""
import re

import pytest
import torch
from golden import assert_close, load_case

from basicsr_sinca.archs.restoreformer_arch import SinCARestoreFormer, VQVAEGANMultiHeadTransformer
from basicsr_sinca.archs.vqvaegan_arch import VQVAEGAN

TINY = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], resolution=32, z_channels=32,
            embed_dim=32, n_embed=16, head_size=4)


def _run_golden(name, arch, tmp_path):
    """Build from a Lightning-format file of the golden weights, run the single call, compare every output:
    semantic outputs, ``hs:<key>`` entries and ``mod:<path>`` submodule outputs (``@s<k>``: stored subsampled)."""
    from fake_lightning import ModelCheckpoint

    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    case, golden_init = load_case(name)
    state_dict = golden_init.build_state_dict(case)
    path = tmp_path / f'{name}.ckpt'
    torch.save({'pytorch-lightning_version': '1.0.8', 'global_step': 1, 'callbacks': {ModelCheckpoint: {}},
                'state_dict': dict({f'vqvae.{k}': v for k, v in state_dict.items()},
                                   **{'loss.discriminator.main.0.weight': torch.zeros(1)})}, path)
    net = arch(**case['constructor']).double().eval()
    loaded, used = read_state_dict(str(path))
    assert load_state_dict_report(net, loaded, strict=True, source=str(path)) == '' and '1 loss.* keys' in used
    (call, ) = case['calls']
    wanted = [k[4:].split('@')[0] for k in call['outputs'] if k.startswith('mod:')]
    seen = {}
    hooks = [net.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o)) for p in wanted]
    try:
        with torch.no_grad():
            x = golden_init.make_input(**case['inputs']['x'])
            dec, emb_loss, (perplexity, _, indices, distance), hs = net(x)[:4]  # VQVAEGAN returns DAEFR's seven
            quant_conv = net.quant_conv(hs['out'])
            quant = net.quantize(quant_conv)[0]
    finally:
        for h in hooks:
            h.remove()
    semantic = {'dec': dec, 'emb_loss': emb_loss, 'perplexity': perplexity, 'indices': indices, 'distance': distance,
                'quant_conv': quant_conv, 'quant': quant}
    tol = case['tolerance']['float64_run']
    for key, ref in call['outputs'].items():
        base, _, step = key.partition('@s')
        if base.startswith('hs:'):
            value = hs[base[3:]]
        elif base.startswith('mod:'):
            value = seen[base[4:]]
        else:
            value = semantic[base]
        if step:
            value = value[..., ::int(step), ::int(step)]
        assert_close(f'{name}.{key}', value, ref, tol)
    return case, net


@pytest.mark.parametrize('name, arch', [('restoreformer', VQVAEGANMultiHeadTransformer),
                                        ('restoreformer_hqdict', VQVAEGAN)])
def test_golden_forward_from_lightning_files(name, arch, tmp_path):
    case, net = _run_golden(name, arch, tmp_path)
    assert list(net.state_dict()) == [n for n, _ in case['parameters']]
    if name == 'restoreformer':  # upstream's default freezing: the codebook only
        assert {n.split('.')[0] for n, p in net.named_parameters() if not p.requires_grad} == {'quantize'}


def test_contract_twin_and_its_prior():
    torch.manual_seed(0)
    official = VQVAEGANMultiHeadTransformer(**{k: v for k, v in TINY.items()}).eval()
    twin = SinCARestoreFormer('nearest', **TINY).eval()
    twin.load_state_dict(official.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        dec = official(x)[0]
        out = twin.restore(x)
    assert torch.allclose(out.image, dec, atol=1e-5) and set(out.context) >= {'mid_atten', 'block_1_atten'}
    assert twin.prior_config() == dict(type='VQVAEGAN', **twin.config) and twin.img_size == 32
    # default trainable set: the encoder after its mid block, quant_conv and the bottleneck
    sinca = SinCARestoreFormer({'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, **TINY)
    trained = {re.sub(r'\.(weight|bias)$', '', n) for n, p in sinca.named_parameters() if p.requires_grad}
    assert {n.split('.')[0] for n in trained} == {'encoder', 'quant_conv', 'bottleneck'}
    assert {n for n in trained if n.startswith('encoder')} == {'encoder.norm_out', 'encoder.conv_out'}
    with pytest.raises(ValueError, match='divisible by 2'):
        twin(torch.rand(1, 3, 31, 32))


def test_hq_dictionary_targets_are_the_codes_its_forward_picks(tmp_path):
    """The twin's teacher (built from the HQ dictionary's file) gives, for a GT batch, the codes the HQ dictionary's
    own forward quantises to, and their codebook rows."""
    torch.manual_seed(0)
    hq = VQVAEGAN(**TINY).eval()
    torch.nn.init.normal_(hq.quantize.embedding.weight)
    torch.save({'params': hq.state_dict()}, tmp_path / 'hq_dictionary.pth')
    twin = SinCARestoreFormer({'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, **TINY)
    prior = twin.build_prior(str(tmp_path / 'hq_dictionary.pth'))
    gt = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        (target, ) = prior.prior_targets(gt)
        indices = hq(gt)[2][2].reshape(2, 16, 16)
    assert len(indices.unique()) > 1
    assert torch.equal(target.indices, indices)
    assert torch.equal(target.feat, hq.quantize.embedding.weight[indices].permute(0, 3, 1, 2))
    assert not any(p.requires_grad for p in prior.parameters())
