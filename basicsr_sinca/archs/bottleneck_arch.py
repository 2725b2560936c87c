"""The bottleneck contract: what replaces the VQ step between a restorer's encoder and decoder.

A bottleneck takes one encoder latent ``lq_feat`` (B, C, H, W) and its frozen codebook (M, C) and returns a
:class:`BottleneckOutput`: the feature handed to the decoder plus what its class declares it returns (code
logits, selected indices, attention split). Callers read the declarations (:class:`Bottleneck` class
attributes) instead of probing the output. YAML chooses bottlenecks with one key, one spec for every codebook
or a list with one spec per codebook::

    network_g:
      type: SinCACodeFormer
      bottleneck: {type: sinca, num_layers: 9, num_heads: 8}
      # several codebooks: bottleneck: [{type: sinca, num_layers: 5}, {type: nearest}, ...]

Types registered here: ``nearest`` (the original VQ), ``sinca`` / ``sa`` / ``ca`` (feature transformers) and
``sinca_index`` (SinCA transformer predicting code indices). Other index heads register from their own module
(``index``: CodeFormer's transformer, ``index_transformer_arch.py``) with ``@BOTTLENECK_REGISTRY.register()`` on
a builder ``fn(dim, codebook_size, **options)``; a builder that also takes ``latent_hw`` receives the latent
grid size (H, W) of its codebook.
"""
import inspect
from typing import NamedTuple, Optional

import torch
from torch import nn

from basicsr_sinca.archs.sinca_arch import SinCAIndexTransformer, SinCATransformer
from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY

__all__ = [
    'BottleneckOutput', 'Bottleneck', 'NearestBottleneck', 'TransformerBottleneck', 'IndexBottleneck',
    'build_bottleneck', 'build_bottlenecks', 'nearest_code_indices', 'lookup_codes'
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


class BottleneckOutput(NamedTuple):
    """What a bottleneck returns for one latent.

    Attributes:
        feat (Tensor): (B, C, H, W), handed to the decoder: z_t of a feature transformer, or the codebook rows
            of the selected codes.
        logits (Tensor | None): (B, H·W, M) code logits (bottlenecks with ``predicts_logits``).
        indices (Tensor | None): (B, H, W) selected codes (bottlenecks with ``selects_codes``).
        attn_split (list[dict] | None): Per layer ``{'self': (B, heads, N), 'codebook': (B, heads, N)}``, the
            attention mass on the LQ tokens and on the codebook (only when asked for).
    """
    feat: torch.Tensor
    logits: Optional[torch.Tensor] = None
    indices: Optional[torch.Tensor] = None
    attn_split: Optional[list] = None


class Bottleneck(nn.Module):
    """Base of every bottleneck; the class attributes declare what :meth:`forward` returns.

    Attributes:
        continuous (bool): ``feat`` is a continuous feature, trained toward the prior's target (Eq. 6).
        predicts_logits (bool): ``logits`` over the codebook (trained with cross-entropy on the target codes).
        selects_codes (bool): ``indices`` are returned and ``feat`` holds their codebook rows.
        has_attention (bool): ``return_attn_split`` and :meth:`attention_maps` are supported (the bottleneck
            keeps its :class:`SinCATransformer` as ``transformer``).

    Args:
        dim (int): Channels C of the latent and of the codebook items.
        codebook_size (int): Items M of the codebook this bottleneck works with.
    """

    continuous = False
    predicts_logits = False
    selects_codes = False
    has_attention = False

    def __init__(self, dim, codebook_size):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.type_name = type(self).__name__  # the registered name when built by build_bottleneck

    def check_inputs(self, lq_feat, codebook, return_attn_split=False):
        """One-line errors for a latent/codebook that does not fit, or an attention split it cannot give."""
        if codebook.dim() != 2 or codebook.shape[1] != self.dim:
            raise ValueError(f'{self.type_name} bottleneck: codebook of shape {tuple(codebook.shape)} does not match '
                             f'dim={self.dim}; expected (M, {self.dim})')
        if lq_feat.dim() != 4 or lq_feat.shape[1] != self.dim:
            raise ValueError(f'{self.type_name} bottleneck: latent of shape {tuple(lq_feat.shape)} does not match '
                             f'codebook of shape {tuple(codebook.shape)}; expected (B, {self.dim}, H, W)')
        if return_attn_split and not self.has_attention:
            raise ValueError(f'{self.type_name} bottleneck has no attention: it cannot return an attention split')

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """
        Args:
            lq_feat (Tensor): Encoder latent z_l, (B, C, H, W).
            codebook (Tensor): Frozen codebook, (M, C).
            return_attn_split (bool): Also return the attention split (``has_attention`` only).

        Returns:
            BottleneckOutput
        """
        raise NotImplementedError

    def attention_transformer(self):
        """The :class:`SinCATransformer` of a bottleneck with ``has_attention`` (kept as ``self.transformer``)."""
        if not self.has_attention:
            raise ValueError(f'{self.type_name} bottleneck has no attention to analyse')
        return self.transformer

    @property
    def attention_mode(self):
        """``'sinca'``, ``'sa'`` or ``'ca'``: the key layout of :meth:`attention_maps`."""
        return self.attention_transformer().mode

    @torch.no_grad()
    def attention_maps(self, lq_feat, codebook, query_index):
        """Per layer, the attention weights (B, heads, Q, K) of the row-major query positions ``query_index``;
        keys are the H·W tokens, then the M codebook items (only tokens for ``'sa'``, only items for ``'ca'``)."""
        return self.attention_transformer().attention_maps(lq_feat, codebook, query_index)


class NearestBottleneck(Bottleneck):
    """Original VQ: each latent vector is replaced by its nearest codebook item, straight-through.

    ``feat`` is ``z + sg(q - z)``: the decoder's gradient reaches the encoder unchanged.

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M.
    """

    selects_codes = True

    def forward(self, lq_feat, codebook, return_attn_split=False):
        self.check_inputs(lq_feat, codebook, return_attn_split)
        with torch.no_grad():
            indices, _ = nearest_code_indices(lq_feat, codebook)
        quant = lookup_codes(indices, codebook)
        return BottleneckOutput(lq_feat + (quant - lq_feat).detach(), indices=indices)


class TransformerBottleneck(Bottleneck):
    """Continuous feature transformation by a :class:`SinCATransformer` (modes ``sinca``, ``sa``, ``ca``).

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M.
        mode (str): Attention mode. Default: ``'sinca'``.
        num_layers (int): Default: 9 (paper). num_heads (int): Default: 8. ffn_expansion (float): Default: 2.66.
        Other keyword arguments go to :class:`SinCATransformer`.
    """

    continuous = True
    has_attention = True

    def __init__(self, dim, codebook_size, mode='sinca', num_layers=9, num_heads=8, ffn_expansion=2.66, **kwargs):
        super().__init__(dim, codebook_size)
        self.transformer = SinCATransformer(dim, num_layers, num_heads, ffn_expansion, mode, **kwargs)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        self.check_inputs(lq_feat, codebook)
        out = self.transformer(lq_feat, codebook, return_attn_split)
        if return_attn_split:
            return BottleneckOutput(out[0], attn_split=out[1])
        return BottleneckOutput(out)


class IndexBottleneck(Bottleneck):
    """SinCA transformer + linear head predicting code indices; the decoder gets the top-1 rows (Table 3).

    Args:
        dim (int): Channels C.
        codebook_size (int): Items M (the head's output size).
        Other keyword arguments go to :class:`SinCAIndexTransformer`.
    """

    predicts_logits = True
    selects_codes = True
    has_attention = True

    def __init__(self, dim, codebook_size, num_layers=9, num_heads=8, ffn_expansion=2.66, mode='sinca', **kwargs):
        super().__init__(dim, codebook_size)
        self.transformer = SinCAIndexTransformer(dim, codebook_size, num_layers=num_layers, num_heads=num_heads,
                                                 ffn_expansion=ffn_expansion, mode=mode, **kwargs)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        self.check_inputs(lq_feat, codebook)
        out = self.transformer(lq_feat, codebook, return_attn_split)
        return BottleneckOutput(out[0], logits=out[1], indices=out[2], attn_split=out[3] if return_attn_split else None)


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


def build_bottleneck(opt, dim, codebook_size, latent_hw=None, key='bottleneck'):
    """Build one bottleneck from ``{'type': name, **options}`` (or just the name).

    Args:
        opt (dict | str): Options.
        dim (int): Channels of the latent/codebook (given by the network).
        codebook_size (int): Codebook items (given by the network).
        latent_hw (tuple[int] | None): Latent grid (H, W) at the training size, for builders that take it.
        key (str): Option key named in errors.

    Raises:
        ValueError: unknown type or options the type does not take, naming the key.
    """
    opt = {'type': opt} if isinstance(opt, str) else dict(opt or {})
    btype = opt.pop('type', None)
    if btype not in BOTTLENECK_REGISTRY:
        known = ', '.join(sorted(BOTTLENECK_REGISTRY.keys()))
        raise ValueError(f'{key}.type: unknown bottleneck {btype!r}; expected one of: {known}')
    builder = BOTTLENECK_REGISTRY.get(btype)
    if 'latent_hw' in inspect.signature(builder).parameters:
        opt['latent_hw'] = latent_hw
    try:
        bottleneck = builder(dim=dim, codebook_size=codebook_size, **opt)
    except TypeError as err:
        opt.pop('latent_hw', None)
        raise ValueError(f'{key}: bad options {sorted(opt)} for bottleneck {btype!r}: {err}') from None
    bottleneck.type_name = btype
    return bottleneck


def build_bottlenecks(spec, codebook_shapes, latent_hw=None):
    """One bottleneck per codebook from the YAML ``bottleneck`` value.

    Args:
        spec (dict | str | list | None): One spec for every codebook, or a list with one spec per codebook.
            None means ``sinca`` with the paper settings.
        codebook_shapes (list[tuple[int, int]]): (M, C) of each codebook.
        latent_hw (list[tuple[int, int]] | None): Latent grid (H, W) of each codebook at the training size.

    Returns:
        nn.ModuleList: The bottlenecks, in codebook order.

    Raises:
        ValueError: a list whose length is not the number of codebooks, or a bad spec (naming ``bottleneck[i]``).
    """
    n = len(codebook_shapes)
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(f'bottleneck: a list of {len(spec)} specs for a network with {n} codebook(s); give one '
                             'spec (used for every codebook) or one per codebook')
        specs, keys = list(spec), [f'bottleneck[{i}]' for i in range(n)]
    else:
        specs, keys = [spec or 'sinca'] * n, ['bottleneck'] * n
    latent_hw = latent_hw or [None] * n
    return nn.ModuleList(build_bottleneck(s, dim, size, hw, key)
                         for s, (size, dim), hw, key in zip(specs, codebook_shapes, latent_hw, keys))
