"""SinCA core: attention equations, transformer, caches, long sequences, index variant."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from basicsr_sinca.archs import sinca_arch
from basicsr_sinca.archs.sinca_arch import SinCAAttention, SinCAIndexTransformer, SinCATransformer


def naive_attention(attn, x, codebook):
    """The equations of docs/architecture.md written out with einsum (no SDPA, no chunking, no cache)."""
    lin = lambda layer, t: torch.einsum('...i,oi->...o', t, layer.weight) + layer.bias  # noqa: E731
    b, n, c = x.shape
    h = attn.num_heads
    if codebook is not None and codebook.dim() == 2:
        codebook = codebook.expand(b, -1, -1)
    parts = {'sinca': [x, codebook], 'sa': [x], 'ca': [codebook]}[attn.mode]
    kv_in = torch.cat(parts, dim=1)
    q = lin(attn.to_q, x).reshape(b, n, h, c // h)
    k = lin(attn.to_k, kv_in).reshape(b, kv_in.shape[1], h, c // h)
    v = lin(attn.to_v, kv_in).reshape(b, kv_in.shape[1], h, c // h)
    scores = torch.einsum('bnhd,bkhd->bhnk', q, k) / math.sqrt(c // h)
    a = torch.softmax(scores, dim=-1)
    o = torch.einsum('bhnk,bkhd->bnhd', a, v).reshape(b, n, c)
    split = a[..., :n].sum(-1) if attn.mode != 'ca' else torch.zeros_like(a[..., 0])
    return lin(attn.to_out, o), split


@pytest.fixture
def toks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 32, generator=g, dtype=torch.float64)
    shared = torch.randn(50, 32, generator=g, dtype=torch.float64) * 2
    per_sample = torch.randn(2, 50, 32, generator=g, dtype=torch.float64)
    return x, shared, per_sample


@pytest.mark.parametrize('mode', ['sinca', 'sa', 'ca'])
@pytest.mark.parametrize('which', ['shared', 'per_sample'])
def test_attention_equals_naive_float64(toks, mode, which):
    x, shared, per_sample = toks
    codebook = shared if which == 'shared' else per_sample
    attn = SinCAAttention(32, num_heads=4, mode=mode).double()
    for p in attn.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, std=0.2)
    ref, ref_split = naive_attention(attn, x, codebook)
    assert (attn(x, codebook) - ref).abs().max() <= 1e-10
    out, split = attn(x, codebook, return_attn_split=True)
    assert (out - ref).abs().max() <= 1e-10
    assert (split['self'] - ref_split).abs().max() <= 1e-10
    assert torch.allclose(split['self'] + split['codebook'], torch.ones_like(ref_split))
    attn.eval()
    with torch.no_grad():
        assert (attn(x, codebook) - ref).abs().max() <= 1e-10  # eval path (cache) too


def test_mode_semantics(toks):
    x, shared, _ = toks
    torch.manual_seed(1)
    sa = SinCAAttention(32, 4, 'sa').double()
    assert torch.equal(sa(x, shared), sa(x, torch.randn_like(shared)))
    assert torch.equal(sa(x, shared), sa(x, None))

    ca = SinCAAttention(32, 4, 'ca').double()
    x2 = x.clone()
    x2[:, 5] += 3.0  # change one token: in CA the other tokens' outputs must not move
    diff = (ca(x, shared) - ca(x2, shared)).abs().amax(dim=-1)
    assert diff[:, 5].min() > 1e-3 and torch.all(torch.cat([diff[:, :5], diff[:, 6:]], 1) == 0)

    sinca = SinCAAttention(32, 4, 'sinca').double()
    d = (sinca(x, shared) - sinca(x2, shared)).abs().amax(dim=-1)
    assert torch.all(d > 0)  # in SinCA every token sees the changed one

    perm = torch.randperm(shared.shape[0])
    for attn in (sinca, ca):
        assert torch.allclose(attn(x, shared), attn(x, shared[perm]), atol=1e-12)


def test_gradients_reach_tokens_and_projections_not_frozen_codebook():
    torch.manual_seed(0)
    net = SinCATransformer(dim=32, num_layers=2, num_heads=4)
    codebook = torch.nn.Parameter(torch.randn(40, 32), requires_grad=False)
    feat = torch.randn(2, 32, 6, 5, requires_grad=True)
    net(feat, codebook).square().mean().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert codebook.grad is None


def test_eval_cache_identical_and_invalidated_by_optimizer_step():
    torch.manual_seed(0)
    net = SinCATransformer(dim=32, num_layers=2, num_heads=4).eval()
    codebook = torch.nn.Parameter(torch.randn(40, 32), requires_grad=False)
    feat = torch.randn(3, 32, 4, 4)
    codebook_projections = []
    net.layers[0].attn.to_k.register_forward_hook(
        lambda m, inp, out: codebook_projections.append(inp[0].shape[:-1] == (40, )))

    with torch.no_grad():
        first = net(feat, codebook)
        second = net(feat[:1], codebook)  # another batch: codebook K/V reused
    assert codebook_projections == [False, True, False]  # tokens, codebook; then tokens only
    assert torch.allclose(second, first[:1], atol=1e-6)  # batch size changes float blocking only
    uncached = copy.deepcopy(net).train()
    with torch.no_grad():
        assert torch.equal(uncached(feat, codebook), first)

    # an optimizer step (even in eval mode) changes the weights: the cache must not serve stale K/V
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(feat, codebook).square().mean().backward()
    opt.step()
    with torch.no_grad():
        after = net(feat, codebook)
        fresh = copy.deepcopy(net).train()(feat, codebook)
    assert not torch.allclose(after, first)
    assert torch.equal(after, fresh)
    # load_state_dict also bumps versions
    net.load_state_dict(uncached.state_dict())
    with torch.no_grad():
        assert torch.equal(net(feat, codebook), first)
    net.train()
    assert net.layers[0].attn.kv_cache._value is None and net.layers[0].norm_cache._value is None


def test_chunked_path_equals_direct_and_bounds_score_buffers(monkeypatch):
    torch.manual_seed(0)
    attn = SinCAAttention(32, 4, 'sinca').double()
    x = torch.randn(2, 300, 32, dtype=torch.float64)
    codebook = torch.randn(64, 32, dtype=torch.float64)
    direct = attn(x, codebook)
    direct_split = attn(x, codebook, return_attn_split=True)[1]
    attn.max_attn_elements = 2 * 4 * 364 * 16  # 16 queries per chunk
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, *a, **kw):
        seen.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2])
        return real_sdpa(q, k, v, *a, **kw)

    monkeypatch.setattr(sinca_arch.F, 'scaled_dot_product_attention', recording_sdpa)
    chunked = attn(x, codebook)
    assert len(seen) == math.ceil(300 / 16) and max(seen) <= attn.max_attn_elements
    assert (chunked - direct).abs().max() <= 1e-12
    out, split = attn(x, codebook, return_attn_split=True)
    assert (out - direct).abs().max() <= 1e-12 and (split['self'] - direct_split['self']).abs().max() <= 1e-12


def test_long_sequence_runs_in_chunks(monkeypatch):
    """16k tokens + 1024 codes: the default budget never forms a 16384 x 17408 score block."""
    attn = SinCAAttention(64, 8, 'sinca').eval()
    seen = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(sinca_arch.F, 'scaled_dot_product_attention',
                        lambda q, k, v: seen.append(q.shape[2]) or real_sdpa(q, k, v))
    with torch.no_grad():
        out = attn(torch.randn(1, 16384, 64), torch.randn(1024, 64))
    assert out.shape == (1, 16384, 64) and torch.isfinite(out).all()
    assert max(seen) < 16384 and sum(seen) == 16384


def test_transformer_any_size_per_sample_codebook_and_split():
    torch.manual_seed(0)
    net = SinCATransformer(dim=32, num_layers=3, num_heads=4, mode='sinca').double()
    for hw in [(1, 1), (5, 9), (16, 16)]:
        feat = torch.randn(2, 32, *hw, dtype=torch.float64)
        out, splits = net(feat, torch.randn(2, 20, 32, dtype=torch.float64), return_attn_split=True)
        assert out.shape == feat.shape and len(splits) == 3
        assert splits[0]['self'].shape == (2, 4, hw[0] * hw[1])
    ca = SinCATransformer(dim=32, num_layers=1, num_heads=4, mode='ca')
    _, splits = ca(torch.randn(1, 32, 3, 3), torch.randn(20, 32), return_attn_split=True)
    assert torch.all(splits[0]['self'] == 0) and torch.allclose(splits[0]['codebook'], torch.ones(1, 4, 9))


def test_index_transformer_looks_up_top1_rows():
    torch.manual_seed(0)
    net = SinCAIndexTransformer(dim=32, codebook_size=20, num_layers=2, num_heads=4)
    codebook = torch.randn(20, 32)
    feat = torch.randn(2, 32, 3, 4)
    quant, logits, indices = net(feat, codebook)
    assert logits.shape == (2, 12, 20) and indices.shape == (2, 3, 4)
    assert torch.equal(indices.flatten(1), logits.argmax(-1))
    assert torch.equal(quant, codebook[indices].permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r'codebook of shape \(21, 32\)'):
        net(feat, torch.randn(21, 32))


def _ref_layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _ref_attention(x, c, attn, mode):
    """DESIGN.md §2: Q = X W_Q; K, V from [X; C] (sinca), X (sa) or C (ca); softmax(QKᵀ/√d_head) V, heads, W_O."""
    def lin(t, layer):
        return t @ layer.weight.T + layer.bias

    src = {'sinca': torch.cat([x, c], 1), 'sa': x, 'ca': c}[mode]
    b, n, d = x.shape
    h = attn.num_heads
    q = lin(x, attn.to_q).reshape(b, n, h, d // h).transpose(1, 2)
    k = lin(src, attn.to_k).reshape(b, src.shape[1], h, d // h).transpose(1, 2)
    v = lin(src, attn.to_v).reshape(b, src.shape[1], h, d // h).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / (d // h)**0.5
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return lin((weights @ v).transpose(1, 2).reshape(b, n, d), attn.to_out)


def _ref_gdfn(x, hw, ffn):
    """1×1 conv d→2h, depthwise 3×3 (zero padding), GELU(x1)·x2, 1×1 conv h→d, on the token grid."""
    b, n, d = x.shape
    y = x @ ffn.project_in.weight[:, :, 0, 0].T  # (B, N, 2h)
    grid = y.reshape(b, hw[0], hw[1], -1)
    padded = torch.nn.functional.pad(grid, (0, 0, 1, 1, 1, 1))
    kernel = ffn.dwconv.weight[:, 0]  # (2h, 3, 3)
    out = sum(padded[:, i:i + hw[0], j:j + hw[1]] * kernel[:, i, j] for i in range(3) for j in range(3))
    x1, x2 = out.reshape(b, n, -1).chunk(2, dim=-1)
    gelu = 0.5 * x1 * (1 + torch.erf(x1 / 2**0.5))
    return (gelu * x2) @ ffn.project_out.weight[:, :, 0, 0].T


@pytest.mark.parametrize('mode', ['sinca', 'sa', 'ca'])
@pytest.mark.parametrize('max_attn_elements', [2**25, 7])  # the fused kernel and the chunked path
def test_transformer_equals_the_equations_float64(mode, max_attn_elements):
    """The whole transformer against DESIGN.md §2 written out independently: pre-norm layers
    x += Attn(LN1(x), LN1(C)); x += GDFN(LN2(x)); then Linear([z_in ; x_L]); to 1e-10 in float64."""
    torch.manual_seed(0)
    net = SinCATransformer(dim=16, num_layers=2, num_heads=4, mode=mode, max_attn_elements=max_attn_elements).double()
    with torch.no_grad():  # non-trivial norms and biases
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    feat = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    codebook = torch.randn(7, 16, dtype=torch.float64) * 3
    tokens = feat.flatten(2).transpose(1, 2)
    x = tokens
    for layer in net.layers:
        c = _ref_layer_norm(codebook, layer.norm1).expand(2, -1, -1)
        x = x + _ref_attention(_ref_layer_norm(x, layer.norm1), c, layer.attn, mode)
        x = x + _ref_gdfn(_ref_layer_norm(x, layer.norm2), (3, 5), layer.ffn)
    ref = (torch.cat([tokens, x], -1) @ net.fuse.weight.T + net.fuse.bias).transpose(1, 2).reshape(2, 16, 3, 5)
    out = net(feat, codebook)
    assert (out - ref).abs().max().item() <= 1e-10
    split_out, _ = net(feat, codebook, return_attn_split=True)  # the explicit-softmax path of the analysis tools
    assert (split_out - ref).abs().max().item() <= 1e-10
    net.eval()
    with torch.no_grad():  # eval mode with the codebook caches gives the same
        assert (net(feat, codebook) - ref).abs().max().item() <= 1e-10
