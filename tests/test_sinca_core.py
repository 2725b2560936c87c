"""SinCA core: attention equations, transformer, caches, long sequences, bottlenecks, feature loss."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from basicsr_sinca.archs import sinca_arch
from basicsr_sinca.archs.bottleneck_arch import build_bottleneck, nearest_code_indices
from basicsr_sinca.archs.sinca_arch import SinCAAttention, SinCAIndexTransformer, SinCATransformer
from basicsr_sinca.losses.sinca_loss import FeatureMatchingLoss


def naive_attention(attn, x, codebook):
    """Eq. of DESIGN.md section 2 written out with einsum (no SDPA, no chunking, no cache)."""
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


def test_nearest_bottleneck_brute_force_and_straight_through():
    torch.manual_seed(0)
    codebook = torch.randn(30, 8, dtype=torch.float64)
    feat = torch.randn(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    out, aux = build_bottleneck({'type': 'nearest'}, 8, 30)(feat, codebook)
    brute = torch.empty(2, 3, 5, dtype=torch.long)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                dists = ((feat.detach()[b, :, i, j] - codebook)**2).sum(dim=1)
                brute[b, i, j] = min(range(30), key=lambda m: float(dists[m]))
    assert torch.equal(aux['indices'], brute)
    assert torch.allclose(out, codebook[brute].permute(0, 3, 1, 2))
    upstream = torch.randn_like(out)
    out.backward(upstream)
    assert torch.equal(feat.grad, upstream)  # straight-through: d out / d z = identity
    idx, dist = nearest_code_indices(feat.detach(), codebook)
    assert dist.shape == (30, 30) and torch.equal(idx, brute)


@pytest.mark.parametrize('btype', ['sinca', 'sa', 'ca', 'sinca_index'])
def test_transformer_bottlenecks_through_registry(btype):
    b = build_bottleneck({'type': btype, 'num_layers': 1, 'num_heads': 2}, 16, 12)
    feat, aux = b(torch.randn(1, 16, 4, 4), torch.randn(12, 16), return_attn_split=True)
    assert feat.shape == (1, 16, 4, 4) and len(aux['attn_split']) == 1
    if btype == 'sinca_index':
        assert aux['logits'].shape == (1, 16, 12)


def test_shape_errors_name_both_shapes():
    attn = SinCAAttention(32, 4)
    with pytest.raises(ValueError, match=r'codebook of shape \(10, 16\) does not match tokens of shape \(2, 7, 32\)'):
        attn(torch.randn(2, 7, 32), torch.randn(10, 16))
    with pytest.raises(ValueError, match=r'codebook of shape \(3, 10, 32\) does not match tokens of shape \(2, 7'):
        attn(torch.randn(2, 7, 32), torch.randn(3, 10, 32))
    with pytest.raises(ValueError, match=r'tokens of shape \(2, 7, 16\) do not match dim=32'):
        attn(torch.randn(2, 7, 16), torch.randn(10, 32))
    b = build_bottleneck('sinca', 32, 10)
    with pytest.raises(ValueError, match=r'latent of shape \(1, 16, 4, 4\) does not match codebook of shape \(10, 3'):
        b(torch.randn(1, 16, 4, 4), torch.randn(10, 32))
    with pytest.raises(ValueError, match="unknown bottleneck 'vq'; expected one of: .*nearest"):
        build_bottleneck({'type': 'vq'}, 32, 10)
    with pytest.raises(ValueError, match="bottleneck 'nearest': bad options"):
        build_bottleneck({'type': 'nearest', 'num_layers': 3}, 32, 10)


def test_feature_matching_loss_eq6():
    torch.manual_seed(0)
    target = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_t = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_l = torch.randn(2, 8, 4, 4, requires_grad=True)
    l_match, l_lq = FeatureMatchingLoss()(z_t, z_l, target)
    assert torch.allclose(l_match, ((target - z_t) ** 2).mean())
    assert torch.allclose(l_lq, ((z_l - target) ** 2).mean())
    (l_match + l_lq).backward()
    assert target.grad is None and z_t.grad is not None and z_l.grad is not None
    l_match, l_lq = FeatureMatchingLoss(match_weight=2.0, lq_weight=0.0, loss_weight=0.5)(z_t, z_l, target)
    assert l_lq is None and torch.allclose(l_match, ((target - z_t) ** 2).mean())


def test_benchmark_quick_output_format(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import REPO, sub_env
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, f'{REPO}/scripts/benchmark.py', '--quick', '--out', str(out)],
                          capture_output=True, text=True, env=sub_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / 'benchmark.json').read_text())
    assert res['quick'] is True and [r['batch'] for r in res['a']] == [1, 8]
    for r in res['a']:
        for key in ('sinca_infer_ms', 'index_infer_ms', 'sinca_train_ms', 'index_train_ms'):
            assert r[key] > 0
        assert abs(r['infer_ratio'] - r['sinca_infer_ms'] / r['index_infer_ms']) < 1e-9
    assert [r['tokens'] for r in res['b']] == res['config']['tokens']
    assert all(r['sinca_ms'] > 0 and 'naive_ms' in r for r in res['b'])
    assert res['c']['transformer_gflop'] > 0 and res['c']['matmul_gflops_per_s'] > 0
    assert len(res['targets']) == 3 and all(isinstance(t['met'], bool) for t in res['targets'])
    table = (out / 'benchmark.md').read_text()
    assert table.count('\n| ') >= 2 + 2 + 3 and '## (a)' in table and '## Targets' in table
    assert table in proc.stdout
