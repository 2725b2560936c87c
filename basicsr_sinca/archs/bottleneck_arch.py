"""The bottleneck: what replaces the VQ step between a baseline's encoder and decoder.

Every baseline wrapper is ``encoder -> bottleneck -> (fusion) -> decoder``. A bottleneck takes the encoder
latent ``lq_feat`` (B, C, H, W) and the frozen codebook (M, C) and returns ``(feat, aux)``: the feature handed
to the decoder and a dict of auxiliaries for losses and analysis (``indices``, ``logits``, ``quant_feat``,
``attn_split``). YAML chooses it with one key::

    network_g:
      type: CodeFormerBottleneck
      bottleneck: {type: sinca, num_layers: 9, num_heads: 8}

Types registered here: ``nearest`` (the original VQ), ``sinca`` / ``sa`` / ``ca`` (feature transformers),
``sinca_index`` (SinCA transformer predicting code indices). Baselines add their own (e.g. CodeFormer's
``index``) with ``@BOTTLENECK_REGISTRY.register()`` on a builder function of the same signature.
"""
import torch
from torch import nn

from basicsr_sinca.archs.sinca_arch import SinCAIndexTransformer, SinCATransformer
from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY

__all__ = [
    'NearestBottleneck', 'TransformerBottleneck', 'IndexBottleneck', 'build_bottleneck', 'nearest_code_indices',
    'lookup_codes', 'check_codebook'
]


def nearest_code_indices(feat, codebook):
    """Nearest codebook item per position by ``||z||^2 + ||e||^2 - 2 z.e`` (the VQ-GAN formula).

    Args:
        feat (Tensor): (B, C, H, W).
        codebook (Tensor): (M, C).

    Returns:
        tuple[Tensor, Tensor]: indices (B, H, W) int64 and the squared distances (B·H·W, M).
    """
    b, c, h, w = feat.shape
    z = feat.permute(0, 2, 3, 1).reshape(-1, c)
    dist = (z ** 2).sum(dim=1, keepdim=True) + (codebook ** 2).sum(dim=1) - 2 * z @ codebook.t()
    return dist.argmin(dim=1).reshape(b, h, w), dist


def lookup_codes(indices, codebook):
    """Codebook rows of ``indices`` (B, H, W) as a (B, C, H, W) feature."""
    return codebook[indices].permute(0, 3, 1, 2).contiguous()


def check_codebook(name, codebook, dim, lq_feat=None):
    if codebook.dim() != 2 or codebook.shape[1] != dim:
        raise ValueError(f'{name}: codebook of shape {tuple(codebook.shape)} does not match dim={dim}; '
                         f'expected (M, {dim})')
    if lq_feat is not None and (lq_feat.dim() != 4 or lq_feat.shape[1] != dim):
        raise ValueError(f'{name}: latent of shape {tuple(lq_feat.shape)} does not match codebook of shape '
                         f'{tuple(codebook.shape)}; expected (B, {dim}, H, W)')


class NearestBottleneck(nn.Module):
    """Original VQ: each latent vector is replaced by its nearest codebook item, straight-through.

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M (checked against the codebook passed in).
    """

    def __init__(self, dim, codebook_size):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """
        Returns:
            tuple: ``(z + sg(q - z), {'indices': (B, H, W), 'quant_feat': q})`` — the straight-through feature
            passes the decoder's gradient to the encoder unchanged; ``quant_feat`` are the plain rows.
        """
        check_codebook('nearest bottleneck', codebook, self.dim, lq_feat)
        with torch.no_grad():
            indices, _ = nearest_code_indices(lq_feat, codebook)
        quant = lookup_codes(indices, codebook)
        return lq_feat + (quant - lq_feat).detach(), {'indices': indices, 'quant_feat': quant}


class TransformerBottleneck(nn.Module):
    """Continuous feature transformation by a :class:`SinCATransformer` (modes ``sinca``, ``sa``, ``ca``).

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M (checked against the codebook passed in).
        mode (str): Attention mode. Other keyword arguments go to :class:`SinCATransformer`.
    """

    def __init__(self, dim, codebook_size, mode='sinca', num_layers=9, num_heads=8, ffn_expansion=2.66, **kwargs):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.transformer = SinCATransformer(dim, num_layers, num_heads, ffn_expansion, mode, **kwargs)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """Returns ``(z_t, aux)``; ``aux['attn_split']`` (one dict per layer) when requested."""
        check_codebook(f'{self.transformer.mode} bottleneck', codebook, self.dim, lq_feat)
        out = self.transformer(lq_feat, codebook, return_attn_split)
        if return_attn_split:
            return out[0], {'attn_split': out[1]}
        return out, {}


class IndexBottleneck(nn.Module):
    """SinCA transformer + linear head predicting code indices; the decoder gets the top-1 rows.

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M (the head's output size).
        Other keyword arguments go to :class:`SinCAIndexTransformer`.
    """

    def __init__(self, dim, codebook_size, num_layers=9, num_heads=8, ffn_expansion=2.66, mode='sinca', **kwargs):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.transformer = SinCAIndexTransformer(dim, codebook_size, num_layers=num_layers, num_heads=num_heads,
                                                 ffn_expansion=ffn_expansion, mode=mode, **kwargs)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """Returns ``(quant_feat, {'logits': (B, N, M), 'indices': (B, H, W), 'quant_feat'})``."""
        check_codebook('sinca_index bottleneck', codebook, self.dim, lq_feat)
        out = self.transformer(lq_feat, codebook, return_attn_split)
        aux = {'logits': out[1], 'indices': out[2], 'quant_feat': out[0]}
        if return_attn_split:
            aux['attn_split'] = out[3]
        return out[0], aux


@BOTTLENECK_REGISTRY.register()
def nearest(dim, codebook_size):
    return NearestBottleneck(dim, codebook_size)


@BOTTLENECK_REGISTRY.register()
def sinca(dim, codebook_size, **kwargs):
    return TransformerBottleneck(dim, codebook_size, mode='sinca', **kwargs)


@BOTTLENECK_REGISTRY.register()
def sa(dim, codebook_size, **kwargs):
    return TransformerBottleneck(dim, codebook_size, mode='sa', **kwargs)


@BOTTLENECK_REGISTRY.register()
def ca(dim, codebook_size, **kwargs):
    return TransformerBottleneck(dim, codebook_size, mode='ca', **kwargs)


@BOTTLENECK_REGISTRY.register()
def sinca_index(dim, codebook_size, **kwargs):
    return IndexBottleneck(dim, codebook_size, **kwargs)


def build_bottleneck(opt, dim, codebook_size):
    """Build a bottleneck from ``{'type': name, **kwargs}``.

    Args:
        opt (dict | str): Options, or just the type name.
        dim (int): Channels of the latent/codebook (given by the baseline).
        codebook_size (int): Codebook items (given by the baseline).

    Raises:
        ValueError: unknown type or arguments the type does not take, naming both.
    """
    opt = {'type': opt} if isinstance(opt, str) else dict(opt or {})
    btype = opt.pop('type', None)
    if btype not in BOTTLENECK_REGISTRY:
        known = ', '.join(sorted(BOTTLENECK_REGISTRY.keys()))
        raise ValueError(f'bottleneck.type: unknown bottleneck {btype!r}; expected one of: {known}')
    try:
        return BOTTLENECK_REGISTRY.get(btype)(dim=dim, codebook_size=codebook_size, **opt)
    except TypeError as err:
        raise ValueError(f'bottleneck {btype!r}: bad options {sorted(opt)}: {err}') from None
