"""Golden case daefr_vqvae: the taming-style VQVAEGAN (DAEFR's codebook autoencoder; RestoreFormer's HQ dictionary
layout) computes the official function (float64), loaded from a Lightning-format checkpoint."""
import pytest
import torch
from golden import assert_close, load_case

from basicsr_sinca.archs.vqvaegan_arch import MultiHeadAttnBlock, VQVAEGAN


def lightning_checkpoint(path, state_dict, prefix):
    """A file laid out as PyTorch Lightning 1.0.8 writes it: the module's state dict under 'state_dict' (here with
    ``prefix`` and training-loss keys), plus trainer state, including a pickled class as a callback key."""
    from fake_lightning import ModelCheckpoint
    sd = {prefix + k: v for k, v in state_dict.items()}
    sd['loss.discriminator.main.0.weight'] = torch.zeros(2, 3, 4, 4)
    sd['loss.perceptual_loss.net.slice1.0.weight'] = torch.zeros(2, 3, 3, 3)
    torch.save({'epoch': 3, 'global_step': 1234, 'pytorch-lightning_version': '1.0.8', 'state_dict': sd,
                'callbacks': {ModelCheckpoint: {'best_model_score': torch.tensor(0.5)}},
                'optimizer_states': [{'state': {}, 'param_groups': [{'lr': 1e-4}]}], 'lr_schedulers': [],
                'hparams_name': 'kwargs', 'hyper_parameters': {'ddconfig': {'ch': 64}}}, path)
    return str(path)


@pytest.fixture(scope='module')
def case(tmp_path_factory):
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    case, golden_init = load_case('daefr_vqvae')
    official = golden_init.build_state_dict(case)
    ckpt = lightning_checkpoint(tmp_path_factory.mktemp('lightning') / 'HQ_codebook.ckpt', official, 'vqvae.')
    state_dict, used = read_state_dict(ckpt)
    assert used == 'state_dict (Lightning; 2 loss.* keys dropped)'
    net = VQVAEGAN(**case['constructor']).double().eval()
    assert load_state_dict_report(net, state_dict, strict=True, source=ckpt) == ''
    assert all(torch.equal(net.state_dict()[k], v) for k, v in official.items())
    return case, net, golden_init.make_input(**case['inputs']['x'])


def test_keys_are_official(case):
    case, net, _ = case
    assert list(net.state_dict()) == [name for name, _ in case['parameters']]  # same names, same order


def test_golden_calls(case):
    case, net, x = case
    tol = case['tolerance']['float64_run']
    out = {c['name']: c['outputs'] for c in case['calls']}
    with torch.no_grad():
        quant, emb_loss, info, hs, h, codebook = net.encode(x)
        for name, value in (('enc_out', hs['out']), ('enc_mid', hs['mid_atten']), ('h', h), ('quant', quant),
                            ('emb_loss', emb_loss), ('indices', info[2].reshape(-1)), ('perplexity', info[0])):
            assert_close(f'encode.{name}', value, out['encode'][name], tol)
        dec = net.decode(quant)  # the forward's decoder pass on the same codes
    assert_close('forward.dec', dec, out['forward']['dec'], tol)


def test_forward_returns_upstream_tuple():
    torch.manual_seed(0)
    net = VQVAEGAN(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], resolution=32, z_channels=32,
                   embed_dim=32, n_embed=16).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        dec, emb_loss, info, hs, h, quant, codebook = net(x)
    assert dec.shape == x.shape and h.shape == quant.shape == (2, 32, 16, 16) and codebook.shape == (16, 32)
    assert set(hs) == {'in', 'block_0', 'block_1_atten', 'mid_atten', 'out'}
    assert info[2].shape == (512, 1) and info[3].shape == (512, 16)
    (target, ) = net.prior_targets(x)  # as an HQ prior: the nearest codes of h, their rows
    assert torch.equal(target.indices.reshape(-1, 1), info[2])
    assert torch.allclose(target.feat, quant, atol=1e-6)


def test_multi_head_attention_equals_per_head_softmax():
    """Heads are contiguous channel groups; queries from norm2(y) with a second input (cross-attention)."""
    torch.manual_seed(0)
    block = MultiHeadAttnBlock(64, head_size=4).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, y = torch.randn(2, 64, 3, 5, dtype=torch.float64), torch.randn(2, 64, 3, 5, dtype=torch.float64)
    for query_src, out in ((block.norm1(x), block(x)), (block.norm2(y), block(x, y))):
        q, k, v = block.q(query_src), block.k(block.norm1(x)), block.v(block.norm1(x))
        heads = []
        for i in range(4):
            sl = slice(16 * i, 16 * (i + 1))
            qi, ki, vi = (t[:, sl].flatten(2) for t in (q, k, v))  # (B, 16, N)
            a = torch.softmax(qi.transpose(1, 2) @ ki / 4.0, dim=-1)  # (B, N, N), scale 16^-0.5
            heads.append((vi @ a.transpose(1, 2)).reshape(2, 16, 3, 5))
        ref = x + block.proj_out(torch.cat(heads, dim=1))
        assert (out - ref).abs().max() < 1e-12
    with pytest.raises(ValueError, match='not divisible by head_size 5'):
        MultiHeadAttnBlock(64, head_size=5)
