"""The bottleneck contract: every registered type returns what its class declares; one builder for one spec or a
list of specs; the original VQ against brute force; one-line errors."""
import pytest
import torch

from basicsr_sinca.archs.bottleneck_arch import (Bottleneck, BottleneckOutput, build_bottleneck, build_bottlenecks,
                                                 nearest_code_indices)
from basicsr_sinca.archs.sinca_arch import SinCAAttention
from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY

SMALL = {'sinca': {'num_layers': 1, 'num_heads': 2}, 'sa': {'num_layers': 1, 'num_heads': 2},
         'ca': {'num_layers': 1, 'num_heads': 2}, 'sinca_index': {'num_layers': 1, 'num_heads': 2},
         'nearest': {}, 'index': {'dim_embd': 16, 'n_head': 2, 'n_layers': 1}, 'feat2index': {}}


def test_every_registered_type_is_covered():
    assert set(BOTTLENECK_REGISTRY.keys()) == set(SMALL)


@pytest.mark.parametrize('btype', sorted(SMALL))
def test_outputs_match_declarations(btype):
    torch.manual_seed(0)
    b = build_bottleneck(dict(SMALL[btype], type=btype), 16, 12, latent_hw=(4, 4))
    assert isinstance(b, Bottleneck) and b.type_name == btype
    codebook = torch.randn(12, 16)
    feat = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = b(feat, codebook)
    assert isinstance(out, BottleneckOutput) and out.feat.shape == (2, 16, 4, 4)
    assert (out.logits is not None) == b.predicts_logits and (out.indices is not None) == b.selects_codes
    assert out.attn_split is None
    if b.predicts_logits:
        assert out.logits.shape == (2, 16, 12) and torch.equal(out.indices.flatten(1), out.logits.argmax(-1))
    if b.selects_codes:  # feat holds the rows of the selected codes
        assert out.indices.shape == (2, 4, 4)
        assert torch.allclose(out.feat, codebook[out.indices].permute(0, 3, 1, 2), atol=1e-6)
    if b.continuous:  # a continuous output depends on the latent through the network
        out.feat.sum().backward()
        assert feat.grad is not None and feat.grad.abs().sum() > 0
        assert not torch.allclose(out.feat, codebook[nearest_code_indices(out.feat, codebook)[0]].permute(0, 3, 1, 2))
    if b.has_attention:
        split = b(feat, codebook, return_attn_split=True).attn_split
        assert len(split) == 1 and split[0]['self'].shape == (2, 2, 16)
        assert torch.allclose(split[0]['self'] + split[0]['codebook'], torch.ones(2, 2, 16))
        maps = b.attention_maps(feat.detach(), codebook, [0, 5])
        keys = {'sinca': 16 + 12, 'sa': 16, 'ca': 12}[b.attention_mode]
        assert len(maps) == 1 and maps[0].shape == (2, 2, 2, keys)
    else:
        with pytest.raises(ValueError, match=f'{btype} bottleneck has no attention'):
            b(feat, codebook, return_attn_split=True)
        with pytest.raises(ValueError, match='has no attention'):
            b.attention_maps(feat, codebook, [0])


def test_nearest_bottleneck_brute_force_and_straight_through():
    torch.manual_seed(0)
    codebook = torch.randn(30, 8, dtype=torch.float64)
    feat = torch.randn(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    out = build_bottleneck({'type': 'nearest'}, 8, 30)(feat, codebook)
    brute = torch.empty(2, 3, 5, dtype=torch.long)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                dists = ((feat.detach()[b, :, i, j] - codebook)**2).sum(dim=1)
                brute[b, i, j] = min(range(30), key=lambda m: float(dists[m]))
    assert torch.equal(out.indices, brute)
    assert torch.allclose(out.feat, codebook[brute].permute(0, 3, 1, 2))
    upstream = torch.randn_like(out.feat)
    out.feat.backward(upstream)
    assert torch.equal(feat.grad, upstream)  # straight-through: d out / d z = identity
    idx, dist = nearest_code_indices(feat.detach(), codebook)
    assert dist.shape == (30, 30) and torch.equal(idx, brute)


def test_one_spec_or_one_per_codebook():
    shapes = [(12, 16), (20, 8)]
    same = build_bottlenecks({'type': 'sinca', 'num_layers': 2, 'num_heads': 2}, shapes)
    assert [b.type_name for b in same] == ['sinca', 'sinca']
    assert [(b.codebook_size, b.dim) for b in same] == shapes and len(same[1].transformer.layers) == 2
    per = build_bottlenecks([{'type': 'sinca', 'num_layers': 3, 'num_heads': 2}, 'nearest'], shapes)
    assert [b.type_name for b in per] == ['sinca', 'nearest'] and len(per[0].transformer.layers) == 3
    assert build_bottlenecks(None, shapes)[0].type_name == 'sinca'  # the paper's bottleneck by default
    with pytest.raises(ValueError, match=r'bottleneck: a list of 1 specs for a network with 2 codebook\(s\)'):
        build_bottlenecks(['nearest'], shapes)
    with pytest.raises(ValueError, match=r"bottleneck\[1\].type: unknown bottleneck 'vq'"):
        build_bottlenecks(['nearest', {'type': 'vq'}], shapes)


def test_index_bottleneck_position_table_from_latent_grid():
    b = build_bottleneck({'type': 'index', 'dim_embd': 16, 'n_head': 2, 'n_layers': 1}, 8, 10, latent_hw=(3, 5))
    assert b.position_emb.shape == (15, 16)
    with pytest.raises(ValueError, match='only works at the training resolution'):
        b(torch.randn(1, 8, 4, 4), torch.randn(10, 8))
    with pytest.raises(ValueError, match="set 'latent_size'"):
        build_bottleneck('index', 8, 10)


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
    with pytest.raises(ValueError, match=r'sinca bottleneck: codebook of shape \(10, 16\) does not match dim=32'):
        b(torch.randn(1, 32, 4, 4), torch.randn(10, 16))
    with pytest.raises(ValueError, match="unknown bottleneck 'vq'; expected one of: .*nearest"):
        build_bottleneck({'type': 'vq'}, 32, 10)
    with pytest.raises(ValueError, match=r"bottleneck: bad options \['num_layers'\] for bottleneck 'nearest'"):
        build_bottleneck({'type': 'nearest', 'num_layers': 3}, 32, 10)
