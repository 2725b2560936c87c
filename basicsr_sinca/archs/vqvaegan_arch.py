"""The taming-transformers style VQ autoencoder shared by DAEFR and RestoreFormer, state-dict compatible with
their releases.

* :class:`TamingResnetBlock`, :class:`MultiHeadAttnBlock` (self- or cross-attention, ``head_size`` heads),
  :class:`TamingEncoder` (returns its feature dict), :class:`TamingDecoder` (optionally cross-attending to
  encoder features, RestoreFormer's MHCA), :class:`TamingVectorQuantizer`.
* :class:`VQVAEGAN` — DAEFR's HQ/LQ codebook autoencoder (``head_size`` 1) and RestoreFormer's HQ dictionary
  (``head_size`` 8); an :class:`HQPrior`. Images in [-1, 1]. Its ``forward`` returns DAEFR's tuple ``(dec,
  emb_loss, info, hs, h, quant, codebook)``; RestoreFormer's version of the class returned its first four.

Key names and the data flow follow the official releases (checked against golden cases in
``tests/archs/test_vqvaegan_arch.py``); the code is ours.
"""
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.codeformer_arch import VectorQuantizer, VQGANDownsample, VQGANUpsample, group_norm
from basicsr_sinca.archs.restorer_arch import HQPrior

__all__ = ['TamingResnetBlock', 'MultiHeadAttnBlock', 'TamingEncoder', 'TamingDecoder', 'TamingVectorQuantizer',
           'VQVAEGAN', 'strip_lightning_prefix', 'check_image_input', 'build_taming_autoencoder']


def check_image_input(module, x, factor, channels=None):
    """One-line error unless ``x`` is (B, C, H, W) with H and W divisible by ``factor`` (and C == ``channels``)."""
    if x.dim() != 4 or x.shape[-2] % factor or x.shape[-1] % factor or (channels and x.shape[1] != channels):
        raise ValueError(f"{type(module).__name__}: input of shape {tuple(x.shape)} must be (B, {channels or 'C'}, H, "
                         f'W) with H and W divisible by {factor}')


def build_taming_autoencoder(module, embed_dim, n_embed, double_z, z_channels, resolution, in_channels, out_ch, ch,
                             ch_mult, num_res_blocks, attn_resolutions, dropout, enable_mid, head_size, beta=0.25):
    """Give ``module`` the taming autoencoder's parts under their official names (``encoder``, ``decoder``,
    ``quantize``, ``quant_conv``, ``post_quant_conv``), its ``config`` (the ddconfig) and ``scale_factor``."""
    ddconfig = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                    attn_resolutions=list(attn_resolutions), dropout=dropout, resolution=resolution,
                    z_channels=z_channels, enable_mid=enable_mid, head_size=head_size)
    module.config = dict(ddconfig, embed_dim=embed_dim, n_embed=n_embed, double_z=double_z, in_channels=in_channels,
                         out_ch=out_ch)
    module.scale_factor = 2**(len(ch_mult) - 1)
    module.encoder = TamingEncoder(in_channels=in_channels, double_z=double_z, **ddconfig)
    module.decoder = TamingDecoder(out_ch=out_ch, **ddconfig)
    module.quantize = TamingVectorQuantizer(n_embed, embed_dim, beta)
    module.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
    module.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)


def strip_lightning_prefix(module, state_dict, prefix, *args):
    """Load pre-hook: released Lightning files keep the network under ``vqvae.`` (the LightningModule attribute);
    their keys are moved to the module's own names (when the file has no unprefixed ``encoder.`` keys)."""
    lightning = prefix + 'vqvae.'
    if any(k.startswith(lightning) for k in state_dict) and not any(k.startswith(prefix + 'encoder.')
                                                                   for k in state_dict):
        for key in [k for k in state_dict if k.startswith(lightning)]:
            state_dict[prefix + key[len(lightning):]] = state_dict.pop(key)


class TamingResnetBlock(nn.Module):
    """``x' + conv2(drop(silu(norm2(conv1(silu(norm1(x)))))))``; ``x'`` through a 1x1 conv when the channels change
    (taming layout, no time embedding).

    Args:
        shortcut (str): Attribute (state-dict) name of the 1x1 conv: ``nin_shortcut`` (taming, DAEFR, RestoreFormer),
            ``residual_func`` (VQFR v2) or ``shortcut_conv`` (VQFR v1). Default: ``'nin_shortcut'``.
    """

    def __init__(self, in_channels, out_channels=None, dropout=0.0, shortcut='nin_shortcut'):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = shortcut if in_channels != out_channels else None
        if self.shortcut:
            setattr(self, shortcut, nn.Conv2d(in_channels, out_channels, 1, 1, 0))

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (getattr(self, self.shortcut)(x) if self.shortcut else x) + h


class MultiHeadAttnBlock(nn.Module):
    """Multi-head spatial attention with 1x1 ``q``, ``k``, ``v``, ``proj_out`` and a residual on ``x``.

    Self-attention on ``norm1(x)``; with a second input ``y`` the queries come from ``norm2(y)`` instead
    (cross-attention: DAEFR's LQ->HQ fusion, RestoreFormer's MHCA). Heads are contiguous channel groups.

    Args:
        in_channels (int): Channels C of ``x`` (and ``y``).
        head_size (int): Number of heads; C must be divisible by it. Default: 1.
    """

    def __init__(self, in_channels, head_size=1):
        super().__init__()
        if in_channels % head_size:
            raise ValueError(f'MultiHeadAttnBlock: {in_channels} channels are not divisible by head_size {head_size}')
        self.in_channels, self.head_size = in_channels, head_size
        self.norm1 = group_norm(in_channels)
        self.norm2 = group_norm(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x, y=None):
        """``x`` (B, C, H, W) and optional ``y`` (B, C, H', W') -> (B, C, H, W)."""
        b, c, h, w = x.shape
        kv = self.norm1(x)
        query = kv if y is None else self.norm2(y)

        def heads(t):  # (B, C, H, W) -> (B, heads, H·W, C / heads)
            return t.reshape(b, self.head_size, c // self.head_size, -1).transpose(2, 3)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(kv)), heads(self.v(kv)))
        out = out.transpose(2, 3).reshape(b, c, *query.shape[2:])
        return x + self.proj_out(out)


class TamingVectorQuantizer(VectorQuantizer):
    """The VQ of taming / DAEFR / RestoreFormer: same maths as CodeFormer's (nearest code by
    ``||z||^2 + ||e||^2 - 2 z.e``, loss mean((sg(z_q) - z)^2) + beta·mean((z_q - sg(z))^2)), taming's returns.

    Args:
        n_e (int): Items M. e_dim (int): Channels C. beta (float): Default: 0.25.
    """

    def __init__(self, n_e, e_dim, beta=0.25):
        super().__init__(n_e, e_dim, beta)

    def forward(self, z):
        """
        Returns:
            tuple: ``(z_q, loss, (perplexity, min_encodings, min_encoding_indices, distances))``, ``z_q``
            straight-through (B, C, H, W), indices (B·H·W, 1), distances (B·H·W, M).
        """
        z_q, loss, stats = super().forward(z)
        return z_q, loss, (stats['perplexity'], stats['min_encodings'], stats['min_encoding_indices'],
                           stats['distances'])


class TamingEncoder(nn.Module):
    """Taming encoder (``conv_in``, ``down.i.{block,attn,downsample}``, ``mid``, ``norm_out``, ``conv_out``).

    :meth:`forward` returns a dict of features: ``in`` (after ``conv_in``), ``block_i`` (level i before its
    downsampling), ``block_{L-1}_atten`` (after ``mid.block_1``), ``mid_atten`` (after ``mid.block_2``) and ``out``.
    """

    def __init__(self, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, attn_resolutions=(16, ), dropout=0.0,
                 in_channels=3, resolution=512, z_channels=256, double_z=False, enable_mid=True, head_size=1):
        super().__init__()
        self.num_levels, self.enable_mid = len(ch_mult), enable_mid
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        block_in, res = ch, resolution
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(TamingResnetBlock(block_in, ch * mult, dropout))
                block_in = ch * mult
                if res in attn_resolutions:
                    stage.attn.append(MultiHeadAttnBlock(block_in, head_size))
            if level != len(ch_mult) - 1:
                stage.downsample = VQGANDownsample(block_in)
                res //= 2
            self.down.append(stage)
        if enable_mid:
            self.mid = nn.Module()
            self.mid.block_1 = TamingResnetBlock(block_in, block_in, dropout)
            self.mid.attn_1 = MultiHeadAttnBlock(block_in, head_size)
            self.mid.block_2 = TamingResnetBlock(block_in, block_in, dropout)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward(self, x):
        hs = {'in': self.conv_in(x)}
        h = hs['in']
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if level != self.num_levels - 1:
                hs[f'block_{level}'] = h
                h = stage.downsample(h)
        if self.enable_mid:
            h = self.mid.block_1(h)
            hs[f'block_{self.num_levels - 1}_atten'] = h
            h = self.mid.block_2(self.mid.attn_1(h))
            hs['mid_atten'] = h
        hs['out'] = self.conv_out(F.silu(self.norm_out(h)))
        return hs


class TamingDecoder(nn.Module):
    """Taming decoder (``conv_in``, ``mid``, ``up.i.{block,attn,upsample}`` with ``num_res_blocks + 1`` blocks per
    level, ``norm_out``, ``conv_out``).

    With ``hs`` (an encoder feature dict) its attention blocks cross-attend: ``mid.attn_1`` to ``hs['mid_atten']``,
    those of level i to ``hs['block_i_atten']`` (RestoreFormer's MHCA); without, they are self-attention.
    """

    def __init__(self, ch=64, out_ch=3, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, attn_resolutions=(16, ),
                 dropout=0.0, resolution=512, z_channels=256, enable_mid=True, head_size=1, **ignore_kwargs):
        super().__init__()
        self.num_levels, self.enable_mid = len(ch_mult), enable_mid
        block_in = ch * ch_mult[-1]
        res = resolution // 2**(len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        if enable_mid:
            self.mid = nn.Module()
            self.mid.block_1 = TamingResnetBlock(block_in, block_in, dropout)
            self.mid.attn_1 = MultiHeadAttnBlock(block_in, head_size)
            self.mid.block_2 = TamingResnetBlock(block_in, block_in, dropout)
        stages = []
        for level in reversed(range(len(ch_mult))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.block.append(TamingResnetBlock(block_in, ch * ch_mult[level], dropout))
                block_in = ch * ch_mult[level]
                if res in attn_resolutions:
                    stage.attn.append(MultiHeadAttnBlock(block_in, head_size))
            if level != 0:
                stage.upsample = VQGANUpsample(block_in)
                res *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z, hs=None):
        h = self.conv_in(z)
        if self.enable_mid:
            h = self.mid.block_1(h)
            h = self.mid.attn_1(h, None if hs is None else hs['mid_atten'])
            h = self.mid.block_2(h)
        for level in reversed(range(self.num_levels)):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h, None if hs is None else hs[f'block_{level}_atten'])
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@ARCH_REGISTRY.register()
class VQVAEGAN(nn.Module, HQPrior):
    """Taming-style VQ autoencoder: encoder -> ``quant_conv`` -> VQ -> ``post_quant_conv`` -> decoder.

    DAEFR's HQ / LQ codebooks (``HQ_codebook.ckpt``, ``LQ_codebook.ckpt``; ``head_size`` 1) and RestoreFormer's HQ
    dictionary (``head_size`` 8). Images in [-1, 1]; sides divisible by 2^(len(ch_mult) - 1).

    Args (the official ``ddconfig`` keys, flattened): embed_dim (256), n_embed (1024), double_z (False),
    z_channels (256), resolution (512), in_channels (3), out_ch (3), ch (64), ch_mult ([1, 2, 2, 4, 4, 8]),
    num_res_blocks (2), attn_resolutions ([16]), dropout (0.0), enable_mid (True), head_size (1), fix_decoder /
    fix_codebook (freeze the decoder / the codebook), beta (0.25).

    The released Lightning files (``state_dict`` with ``vqvae.`` prefixes) load as they are, through the package's
    checkpoint loader (which drops their ``loss.*`` keys).
    """

    image_range = (-1.0, 1.0)

    def __init__(self, embed_dim=256, n_embed=1024, double_z=False, z_channels=256, resolution=512, in_channels=3,
                 out_ch=3, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, attn_resolutions=(16, ), dropout=0.0,
                 enable_mid=True, head_size=1, fix_decoder=False, fix_codebook=False, beta=0.25):
        super().__init__()
        build_taming_autoencoder(self, embed_dim, n_embed, double_z, z_channels, resolution, in_channels, out_ch, ch,
                                 ch_mult, num_res_blocks, attn_resolutions, dropout, enable_mid, head_size, beta)
        frozen = (['decoder'] if fix_decoder else []) + (['quantize'] if fix_codebook else [])
        for name in frozen:
            for p in getattr(self, name).parameters():
                p.requires_grad = False
        self.register_load_state_dict_pre_hook(strip_lightning_prefix)

    def check_input(self, x):
        check_image_input(self, x, self.scale_factor)

    @property
    def codebooks(self):
        return [self.quantize.embedding.weight]

    def encode_hq(self, gt):
        self.check_input(gt)
        return [self.quant_conv(self.encoder(gt)['out'])]

    def autoencoder_terms(self, output):
        dec, emb_loss, info = output[:3]
        return dec, emb_loss, [info[2].reshape(-1)]

    @property
    def decoder_last_layer(self):
        return self.decoder.conv_out.weight

    def encode(self, x):
        """``(quant, emb_loss, info, hs, h, codebook)`` as upstream: ``hs`` the encoder's feature dict, ``h`` the
        latent before quantisation, ``quant`` its nearest codes (straight-through)."""
        self.check_input(x)
        hs = self.encoder(x)
        h = self.quant_conv(hs['out'])
        quant, emb_loss, info = self.quantize(h)
        return quant, emb_loss, info, hs, h, self.quantize.embedding.weight

    def decode(self, quant, hs=None):
        """``post_quant_conv`` then the decoder (cross-attending to ``hs`` when given)."""
        return self.decoder(self.post_quant_conv(quant), hs)

    def forward(self, x):
        """``(dec, emb_loss, info, hs, h, quant, codebook)`` as upstream."""
        quant, emb_loss, info, hs, h, codebook = self.encode(x)
        return self.decode(quant), emb_loss, info, hs, h, quant, codebook
