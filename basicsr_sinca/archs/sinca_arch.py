"""Self-in-Cross-Attention (SinCA) and the SinCA transformer.

SinCA lets the tokens of a low-quality latent ``X`` attend to themselves *and* to a frozen high-quality
codebook ``C`` with one softmax (``docs/architecture.md``)::

    Q = X W_Q,   K = [X W_K ; C W_K],   V = [X W_V ; C W_V],   O = softmax(Q K^T / sqrt(d_head)) V

The same projections serve both parts. ``mode='sa'`` keeps only the self part (self-attention) and
``mode='ca'`` only the codebook part (cross-attention to the codebook); these are the ablations of the
paper's Table 4. Everything here is written once and shared by every baseline.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

__all__ = ['EvalCache', 'SinCAAttention', 'GDFN', 'SinCATransformerLayer', 'SinCATransformer', 'SinCAIndexTransformer']

ATTENTION_MODES = ('sinca', 'sa', 'ca')


class EvalCache:
    """Remembers one value computed from some tensors, until any of them changes.

    A tensor "changes" when it is replaced by another object or modified in place (its version counter
    moves: optimizer steps, ``load_state_dict``, ``copy_``). The key tensors are held, so their storage
    cannot be recycled into a look-alike.
    """

    def __init__(self):
        self.clear()

    def clear(self):
        self._tensors, self._versions, self._value = (), (), None

    @staticmethod
    def usable(*tensors):
        """Cache only outside autograd and for tensors that track versions (not inference-mode tensors)."""
        return not torch.is_grad_enabled() and not any(t.is_inference() for t in tensors)

    def get(self, tensors, compute):
        tensors = tuple(tensors)
        versions = tuple(t._version for t in tensors)
        hit = (len(tensors) == len(self._tensors) and all(a is b for a, b in zip(tensors, self._tensors))
               and versions == self._versions)
        if not hit:
            self._value = compute()
            self._tensors, self._versions = tensors, versions
        return self._value


class SinCAAttention(nn.Module):
    """Multi-head Self-in-Cross-Attention (also plain self- or cross-attention, see ``mode``).

    Args:
        dim (int): Channels C of the tokens and of the codebook items.
        num_heads (int): Number of heads; ``dim`` must be divisible by it. Default: 8.
        mode (str): ``'sinca'`` (keys/values from tokens and codebook), ``'sa'`` (tokens only) or ``'ca'``
            (codebook only). Default: ``'sinca'``.
        qkv_bias (bool): Bias in ``to_q``/``to_k``/``to_v``. Default: True.
        max_attn_elements (int): Upper bound on attention-score elements (B·heads·queries·keys) computed at
            once; longer query sequences are processed in query chunks, so an N×(N+M) map is never
            allocated however large N is. Default: 2**25.
    """

    def __init__(self, dim, num_heads=8, mode='sinca', qkv_bias=True, max_attn_elements=2**25):
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f'SinCAAttention: mode must be one of {ATTENTION_MODES}, got {mode!r}')
        if dim % num_heads != 0:
            raise ValueError(f'SinCAAttention: dim {dim} is not divisible by num_heads {num_heads}')
        self.dim, self.num_heads, self.mode = dim, num_heads, mode
        self.head_dim = dim // num_heads
        self.max_attn_elements = int(max_attn_elements)
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_out = nn.Linear(dim, dim)
        self.kv_cache = EvalCache()

    def extra_repr(self):
        return f'dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}'

    def train(self, mode=True):
        self.kv_cache.clear()
        return super().train(mode)

    def _split_heads(self, t):
        """(B, L, C) -> (B, heads, L, C // heads)."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def check_inputs(self, x, codebook):
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f'SinCAAttention: tokens of shape {tuple(x.shape)} do not match dim={self.dim}; '
                             f'expected (B, N, {self.dim})')
        if self.mode == 'sa':
            return
        if codebook is None:
            raise ValueError(f"SinCAAttention(mode={self.mode!r}) needs a codebook; got None")
        batch_ok = codebook.dim() == 2 or (codebook.dim() == 3 and codebook.shape[0] == x.shape[0])
        if not batch_ok or codebook.shape[-1] != self.dim:
            raise ValueError(f'SinCAAttention: codebook of shape {tuple(codebook.shape)} does not match tokens of '
                             f'shape {tuple(x.shape)}; expected (M, {x.shape[-1]}) or ({x.shape[0]}, M, {x.shape[-1]})')

    def codebook_kv(self, codebook):
        """Keys and values of the codebook items, ``(B or 1, heads, M, head_dim)`` each.

        In eval mode without autograd they are computed once per codebook/weight version and reused.
        """
        if codebook.dim() == 2:
            params = (codebook, self.to_k.weight, self.to_v.weight) + tuple(
                b for b in (self.to_k.bias, self.to_v.bias) if b is not None)
            compute = lambda: (self._split_heads(self.to_k(codebook)[None]),  # noqa: E731
                               self._split_heads(self.to_v(codebook)[None]))
            if not self.training and EvalCache.usable(*params):
                return self.kv_cache.get(params, compute)
            return compute()
        return self._split_heads(self.to_k(codebook)), self._split_heads(self.to_v(codebook))

    def forward(self, x, codebook=None, return_attn_split=False):
        """
        Args:
            x (Tensor): LQ tokens, (B, N, C).
            codebook (Tensor | None): Codebook items, (M, C) shared or (B, M, C) per sample. Ignored by ``'sa'``.
            return_attn_split (bool): Also return the attention mass each query puts on the token (self) part
                and on the codebook part. Default: False.

        Returns:
            Tensor: (B, N, C). With ``return_attn_split``: ``(out, {'self': (B, heads, N), 'codebook':
            (B, heads, N)})``; the two masses of a query sum to 1.
        """
        self.check_inputs(x, codebook)
        b, n, _ = x.shape
        q = self._split_heads(self.to_q(x))
        keys, values = [], []
        if self.mode != 'ca':
            keys.append(self._split_heads(self.to_k(x)))
            values.append(self._split_heads(self.to_v(x)))
        if self.mode != 'sa':
            k_code, v_code = self.codebook_kv(codebook)
            keys.append(k_code.expand(b, -1, -1, -1))
            values.append(v_code.expand(b, -1, -1, -1))
        k = keys[0] if len(keys) == 1 else torch.cat(keys, dim=2)
        v = values[0] if len(values) == 1 else torch.cat(values, dim=2)
        num_self = n if self.mode != 'ca' else 0

        out, split = self._attend(q, k, v, num_self, return_attn_split)
        out = self.to_out(out.transpose(1, 2).reshape(b, n, self.dim))
        return (out, split) if return_attn_split else out

    def _attend(self, q, k, v, num_self, return_split):
        b, h, n, _ = q.shape
        per_query = b * h * k.shape[2]
        chunk = max(1, self.max_attn_elements // per_query)
        if not return_split and chunk >= n:
            return F.scaled_dot_product_attention(q, k, v), None
        outs, self_mass = [], []
        scale = 1.0 / math.sqrt(self.head_dim)
        for start in range(0, n, chunk):
            q_chunk = q[:, :, start:start + chunk]
            if return_split:
                attn = torch.softmax(q_chunk @ k.transpose(-2, -1) * scale, dim=-1)
                outs.append(attn @ v)
                self_mass.append(attn[..., :num_self].sum(-1))
            else:
                outs.append(F.scaled_dot_product_attention(q_chunk, k, v))
        out = torch.cat(outs, dim=2)
        if not return_split:
            return out, None
        mass = torch.cat(self_mass, dim=2)
        return out, {'self': mass, 'codebook': 1 - mass}

    @torch.no_grad()
    def attention_weights(self, x, codebook=None, query_index=None):
        """Full attention weights of some queries, for analysis figures.

        Args:
            x (Tensor): (B, N, C) tokens (already normalised, as inside the layer).
            codebook (Tensor | None): (M, C) or (B, M, C).
            query_index (Tensor | list[int] | None): Query positions; None means all N (mind the memory).

        Returns:
            Tensor: (B, heads, len(query_index), K) with K = N + M (``'sinca'``), N (``'sa'``) or M (``'ca'``);
            keys are ordered tokens first, then codebook items.
        """
        self.check_inputs(x, codebook)
        b = x.shape[0]
        q = self._split_heads(self.to_q(x))
        if query_index is not None:
            q = q[:, :, torch.as_tensor(query_index, device=x.device)]
        keys = [] if self.mode == 'ca' else [self._split_heads(self.to_k(x))]
        if self.mode != 'sa':
            keys.append(self.codebook_kv(codebook)[0].expand(b, -1, -1, -1))
        k = torch.cat(keys, dim=2)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer).

    1x1 conv to 2·hidden channels, 3x3 depthwise conv, GELU(x1)·x2, 1x1 conv back to ``dim``.

    Args:
        dim (int): Input/output channels.
        ffn_expansion (float): hidden = int(dim · ffn_expansion). Default: 2.66.
        bias (bool): Conv biases. Default: False.
    """

    def __init__(self, dim, ffn_expansion=2.66, bias=False):
        super().__init__()
        hidden = int(dim * ffn_expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W)."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class SinCATransformerLayer(nn.Module):
    """Pre-norm layer: ``x = x + Attn(LN(x), LN(C))``; ``x = x + GDFN(LN(x))``.

    The codebook is normalised by the same ``norm1`` as the tokens (it lives in the latent space). In eval
    mode without autograd the normalised codebook is cached, so its keys/values are too.

    Args:
        dim (int): Channels.
        num_heads (int): Attention heads. Default: 8.
        ffn_expansion (float): GDFN expansion. Default: 2.66.
        mode (str): ``'sinca'``, ``'sa'`` or ``'ca'``. Default: ``'sinca'``.
        qkv_bias (bool): Bias of the q/k/v projections. Default: True.
        ffn_bias (bool): Bias of the GDFN convs. Default: False.
        max_attn_elements (int): See :class:`SinCAAttention`.
    """

    def __init__(self, dim, num_heads=8, ffn_expansion=2.66, mode='sinca', qkv_bias=True, ffn_bias=False,
                 max_attn_elements=2**25):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SinCAAttention(dim, num_heads, mode, qkv_bias, max_attn_elements)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = GDFN(dim, ffn_expansion, ffn_bias)
        self.norm_cache = EvalCache()

    def train(self, mode=True):
        self.norm_cache.clear()
        return super().train(mode)

    def normed_codebook(self, codebook):
        if self.attn.mode == 'sa':
            return None
        params = (codebook, self.norm1.weight, self.norm1.bias)
        if codebook.dim() == 2 and not self.training and EvalCache.usable(*params):
            return self.norm_cache.get(params, lambda: self.norm1(codebook))
        return self.norm1(codebook)

    def forward(self, x, codebook, hw, return_attn_split=False):
        """
        Args:
            x (Tensor): (B, N, C) tokens, N = H·W in row-major order.
            codebook (Tensor): (M, C) or (B, M, C).
            hw (tuple[int]): (H, W) of the token grid (GDFN works on the grid).
            return_attn_split (bool): Also return the attention split of :class:`SinCAAttention`.

        Returns:
            Tensor: (B, N, C), and the split dict when requested.
        """
        attn = self.attn(self.norm1(x), self.normed_codebook(codebook), return_attn_split=return_attn_split)
        if return_attn_split:
            attn, split = attn
        x = x + attn
        b, n, c = x.shape
        grid = self.norm2(x).transpose(1, 2).reshape(b, c, hw[0], hw[1]).contiguous()  # NCHW: plain-layout grads (DDP)
        x = x + self.ffn(grid).flatten(2).transpose(1, 2)
        return (x, split) if return_attn_split else x


@ARCH_REGISTRY.register()
class SinCATransformer(nn.Module):
    """SinCA transformer: maps an LQ latent to a feature in the codebook space (replaces VQ lookup).

    ``out = Linear([z_in ; x_L])`` where ``x_L`` is the output of ``num_layers`` pre-norm SinCA layers over the
    tokens of ``z_in``. No positional embedding: the GDFN's depthwise conv carries position, so any H×W works.

    Args:
        dim (int): Latent/codebook channels d. Default: 256.
        num_layers (int): Layers. Default: 9.
        num_heads (int): Heads. Default: 8.
        ffn_expansion (float): GDFN expansion. Default: 2.66.
        mode (str): ``'sinca'``, ``'sa'`` or ``'ca'``. Default: ``'sinca'``.
        qkv_bias (bool): Bias of q/k/v projections. Default: True.
        ffn_bias (bool): Bias of GDFN convs. Default: False.
        max_attn_elements (int): See :class:`SinCAAttention`.
    """

    def __init__(self, dim=256, num_layers=9, num_heads=8, ffn_expansion=2.66, mode='sinca', qkv_bias=True,
                 ffn_bias=False, max_attn_elements=2**25):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList([
            SinCATransformerLayer(dim, num_heads, ffn_expansion, mode, qkv_bias, ffn_bias, max_attn_elements)
            for _ in range(num_layers)
        ])
        self.fuse = nn.Linear(2 * dim, dim)

    @property
    def mode(self):
        return self.layers[0].attn.mode if len(self.layers) else 'sinca'

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """
        Args:
            lq_feat (Tensor): LQ latent z_l, (B, C, H, W).
            codebook (Tensor): (M, C) shared or (B, M, C) per sample.
            return_attn_split (bool): Also return, per layer, the attention mass on the self / codebook part.

        Returns:
            Tensor: z_t, (B, C, H, W); with ``return_attn_split`` also a list (one dict per layer) of
            ``{'self': (B, heads, N), 'codebook': (B, heads, N)}``.
        """
        if lq_feat.dim() != 4 or lq_feat.shape[1] != self.dim:
            raise ValueError(f'SinCATransformer: latent of shape {tuple(lq_feat.shape)} does not match dim={self.dim}; '
                             f'expected (B, {self.dim}, H, W)')
        b, c, h, w = lq_feat.shape
        tokens = lq_feat.flatten(2).transpose(1, 2)
        x, splits = tokens, []
        for layer in self.layers:
            x = layer(x, codebook, (h, w), return_attn_split)
            if return_attn_split:
                x, split = x
                splits.append(split)
        out = self.fuse(torch.cat([tokens, x], dim=-1)).transpose(1, 2).reshape(b, c, h, w)
        return (out, splits) if return_attn_split else out

    @torch.no_grad()
    def attention_maps(self, lq_feat, codebook, query_index):
        """Attention weights of some query positions in every layer (for figures like the paper's Fig. 7).

        Args:
            lq_feat (Tensor): (B, C, H, W).
            codebook (Tensor): (M, C) or (B, M, C).
            query_index (list[int]): Row-major token positions (row·W + col).

        Returns:
            list[Tensor]: One (B, heads, Q, K) tensor per layer; keys are the H·W tokens, then the M codebook items
            (only tokens for ``'sa'``, only items for ``'ca'``).
        """
        b, c, h, w = lq_feat.shape
        x = lq_feat.flatten(2).transpose(1, 2)
        maps = []
        for layer in self.layers:
            maps.append(layer.attn.attention_weights(layer.norm1(x), layer.normed_codebook(codebook), query_index))
            x = layer(x, codebook, (h, w))
        return maps


@ARCH_REGISTRY.register()
class SinCAIndexTransformer(SinCATransformer):
    """Index variant (paper Table 3): SinCA transformer + Linear(d -> M) logits -> top-1 -> codebook rows.

    Trained with cross-entropy on the code indices, like CodeFormer's transformer. Same arguments as
    :class:`SinCATransformer` plus ``codebook_size`` (M).
    """

    def __init__(self, dim=256, codebook_size=1024, **kwargs):
        super().__init__(dim=dim, **kwargs)
        self.codebook_size = codebook_size
        self.idx_head = nn.Linear(dim, codebook_size)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        """
        Returns:
            tuple: ``(quant_feat (B, C, H, W), logits (B, N, M), indices (B, H, W))`` — ``quant_feat`` are the
            codebook rows of the top-1 indices (no gradient, as in CodeFormer); with ``return_attn_split``
            the per-layer splits are appended.
        """
        if codebook.shape[-2] != self.codebook_size:
            raise ValueError(f'SinCAIndexTransformer: codebook of shape {tuple(codebook.shape)} does not have '
                             f'codebook_size={self.codebook_size} rows')
        feat = super().forward(lq_feat, codebook, return_attn_split)
        splits = None
        if return_attn_split:
            feat, splits = feat
        b, c, h, w = feat.shape
        logits = self.idx_head(feat.flatten(2).transpose(1, 2))
        indices = logits.argmax(dim=-1)
        if codebook.dim() == 2:
            rows = codebook.detach()[indices]
        else:
            rows = torch.gather(codebook.detach(), 1, indices[..., None].expand(-1, -1, c))
        quant_feat = rows.transpose(1, 2).reshape(b, c, h, w)
        out = (quant_feat, logits, indices.reshape(b, h, w))
        return out + (splits, ) if return_attn_split else out
