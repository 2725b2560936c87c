"""CodeFormer family, state-dict compatible with the official release.

* :class:`VQAutoEncoder` — the stage-1 VQGAN prior (``vqgan_code1024.pth``); an :class:`HQPrior`.
* :class:`VQGANDiscriminator` — its patch discriminator (``vqgan_discriminator.pth``).
* :class:`SinCACodeFormer` — CodeFormer on the restorer contract (:class:`VQRestorer`) with the bottleneck chosen
  in YAML (``sinca``, ``sa``, ``ca``, ``index``, ``nearest``, ``sinca_index``); encoder, codebook, generator and
  fusion layers keep the official names.
* :class:`CodeFormer` — the official network: ``SinCACodeFormer`` with CodeFormer's own index transformer
  (bottleneck type ``index``), the official constructor, forward signature, return values and key names
  (``codeformer.pth``).

Key names, shapes and data flow follow the official release (checked against golden cases in
``tests/archs/test_codeformer_arch.py``); the code is ours.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks, lookup_codes, nearest_code_indices
from basicsr_sinca.archs.index_transformer_arch import (CodeFormerIndexTransformer, map_official_index_keys,
                                                     official_index_key_names)
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer
from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict

__all__ = [
    'VQGANResBlock', 'VQGANAttnBlock', 'VQGANEncoder', 'VQGANGenerator', 'VectorQuantizer', 'VQAutoEncoder',
    'VQGANDiscriminator', 'FuseSFTBlock', 'SinCACodeFormer', 'CodeFormer', 'adaptive_instance_normalization'
]


def group_norm(channels, groups=32):
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class VQGANResBlock(nn.Module):
    """GroupNorm-swish-conv residual block; a 1x1 ``conv_out`` adapts the shortcut when channels change."""

    def __init__(self, in_channels, out_channels=None, norm_groups=32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_out(x) if hasattr(self, 'conv_out') else x)


class VQGANAttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 ``q``, ``k``, ``v``, ``proj_out`` and a residual."""

    def __init__(self, channels, norm_groups=32):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w).contiguous())


class VQGANDownsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel right/bottom."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VQGANUpsample(nn.Module):
    """Nearest x2 upsampling then a 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class VQGANEncoder(nn.Module):
    """Encoder as one flat ``blocks`` list (official layout).

    ``level_taps`` maps each resolution (as a string of the construction-time size, e.g. ``'64'``) to the
    index of the block whose output CodeFormer's fusion layers read: the last residual block of that level.
    """

    def __init__(self, in_channels, nf, emb_dim, ch_mult, num_res_blocks, resolution, attn_resolutions, norm_groups=32):
        super().__init__()
        g = norm_groups
        blocks = [nn.Conv2d(in_channels, nf, 3, 1, 1)]
        self.level_taps = {}
        ch_in, res = nf, resolution
        for level, mult in enumerate(ch_mult):
            ch_out = nf * mult
            for _ in range(num_res_blocks):
                blocks.append(VQGANResBlock(ch_in, ch_out, g))
                self.level_taps[str(res)] = len(blocks) - 1
                ch_in = ch_out
                if res in attn_resolutions:
                    blocks.append(VQGANAttnBlock(ch_in, g))
            if level != len(ch_mult) - 1:
                blocks.append(VQGANDownsample(ch_in))
                res //= 2
        blocks += [VQGANResBlock(ch_in, None, g), VQGANAttnBlock(ch_in, g), VQGANResBlock(ch_in, None, g)]
        blocks += [group_norm(ch_in, g), nn.Conv2d(ch_in, emb_dim, 3, 1, 1)]  # no swish in between (official)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, taps=()):
        """(B, 3, H, W) -> latent (B, emb_dim, H/2^L, W/2^L); with ``taps`` also {size: feature} of those levels."""
        want = {self.level_taps[t]: t for t in taps}
        feats = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in want:
                feats[want[i]] = x
        return (x, feats) if taps else x


class VQGANGenerator(nn.Module):
    """Generator (decoder) as one flat ``blocks`` list (official layout).

    ``level_taps`` maps each resolution to the block after which CodeFormer fuses encoder features: the
    first residual block of each upsampled level, the last one at the latent level (official indices
    16:6, 32:9, 64:12, 128:15, 256:18, 512:21 for the released configuration).
    """

    def __init__(self, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions, norm_groups=32):
        super().__init__()
        g = norm_groups
        ch_in = nf * ch_mult[-1]
        res = img_size // 2**(len(ch_mult) - 1)
        blocks = [nn.Conv2d(emb_dim, ch_in, 3, 1, 1), VQGANResBlock(ch_in, None, g), VQGANAttnBlock(ch_in, g),
                  VQGANResBlock(ch_in, None, g)]
        self.level_taps = {}
        for level in reversed(range(len(ch_mult))):
            ch_out = nf * ch_mult[level]
            for r in range(res_blocks):
                blocks.append(VQGANResBlock(ch_in, ch_out, g))
                if r == 0 or level == len(ch_mult) - 1:
                    self.level_taps[str(res)] = len(blocks) - 1
                ch_in = ch_out
                if res in attn_resolutions:
                    blocks.append(VQGANAttnBlock(ch_in, g))
            if level != 0:
                blocks.append(VQGANUpsample(ch_in))
                res *= 2
        blocks += [group_norm(ch_in, g), nn.Conv2d(ch_in, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, fuse=None):
        """latent (B, emb_dim, h, w) -> image (B, 3, H, W); ``fuse`` maps a block index to ``fn(feature)``."""
        for i, block in enumerate(self.blocks):
            x = block(x)
            if fuse and i in fuse:
                x = fuse[i](x)
        return x


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with the codebook in ``embedding`` (official ``quantize``).

    Args:
        codebook_size (int): Items M.
        emb_dim (int): Channels C.
        beta (float): Commitment weight. Default: 0.25.
    """

    def __init__(self, codebook_size, emb_dim, beta=0.25):
        super().__init__()
        self.codebook_size, self.emb_dim, self.beta = codebook_size, emb_dim, beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        self.embedding.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def forward(self, z):
        """
        Returns:
            tuple: ``(z_q, loss, stats)`` — ``z_q`` (B, C, H, W) in straight-through form; ``loss`` =
            mean((sg(z_q) - z)^2) + beta·mean((z_q - sg(z))^2); ``stats`` with ``perplexity``,
            ``min_encodings`` (one-hot, (BHW, M)), ``min_encoding_indices`` ((BHW, 1)), ``mean_distance`` (and
            ``distances`` (BHW, M), for the taming-style quantiser's returns).
        """
        codebook = self.embedding.weight
        indices, dist = nearest_code_indices(z, codebook)
        z_q = lookup_codes(indices, codebook)
        loss = torch.mean((z_q.detach() - z)**2) + self.beta * torch.mean((z_q - z.detach())**2)
        flat = indices.reshape(-1, 1)
        one_hot = torch.zeros(flat.shape[0], self.codebook_size, device=z.device, dtype=z.dtype)
        one_hot.scatter_(1, flat, 1)
        usage = one_hot.mean(dim=0)
        perplexity = torch.exp(-torch.sum(usage * torch.log(usage + 1e-10)))
        stats = {'perplexity': perplexity, 'min_encodings': one_hot, 'min_encoding_indices': flat,
                 'mean_distance': dist.mean(), 'distances': dist}
        return z + (z_q - z).detach(), loss, stats

    def get_codebook_feat(self, indices, shape):
        """Codebook rows of ``indices`` (any shape with B·H·W entries) as (B, C, H, W); ``shape`` = [B, H, W, C]."""
        rows = self.embedding.weight[indices.reshape(-1)]
        return rows.view(shape).permute(0, 3, 1, 2).contiguous()


def load_official_weights(net, path, param_key='params_ema', what='weights'):
    """Load a released BasicSR-style checkpoint strictly, with one readable error when it does not fit."""
    state_dict, used = read_state_dict(path, param_key)
    load_state_dict_report(net, state_dict, strict=True, source=f'{what} {path} [{used}]')


@ARCH_REGISTRY.register()
class VQAutoEncoder(nn.Module, HQPrior):
    """CodeFormer's stage-1 VQGAN: encoder -> nearest codebook item -> generator. Images in [-1, 1].

    As an :class:`HQPrior` (the frozen teacher of the restoration stages) its one codebook is
    ``quantize.embedding.weight`` and its HQ latent is the encoder output.

    Args (official): img_size (512), nf (64), ch_mult ([1, 2, 2, 4, 4, 8]), quantizer ('nearest'; the unused
    Gumbel variant is not supported), res_blocks (2), attn_resolutions ([16]), codebook_size (1024), emb_dim
    (256), beta (0.25), gumbel_straight_through / gumbel_kl_weight (accepted, unused), model_path (a local
    checkpoint to load: ``params_ema``, else ``params``).
    Added: norm_groups (32, CodeFormer's fixed GroupNorm groups; no parameter depends on it). Narrow toy
    networks need fewer: with one channel per group every norm removes each channel's spatial mean, and a
    32-channel toy prior then failed to reproduce a crop's mean colour (``options/quickstart``).

    Works on any input whose sides are divisible by 2^(len(ch_mult) - 1).
    """

    image_range = (-1.0, 1.0)

    def __init__(self, img_size=512, nf=64, ch_mult=(1, 2, 2, 4, 4, 8), quantizer='nearest', res_blocks=2,
                 attn_resolutions=(16, ), codebook_size=1024, emb_dim=256, beta=0.25, gumbel_straight_through=False,
                 gumbel_kl_weight=1e-8, model_path=None, norm_groups=32):
        super().__init__()
        if quantizer != 'nearest':
            raise ValueError(f"VQAutoEncoder: quantizer {quantizer!r} is not supported (only 'nearest', the one "
                             'every CodeFormer release uses)')
        if nf % norm_groups != 0:
            raise ValueError(f'VQAutoEncoder: nf={nf} must be a multiple of norm_groups={norm_groups} (GroupNorm)')
        self.img_size, self.nf, self.ch_mult = img_size, nf, list(ch_mult)
        self.codebook_size, self.emb_dim = codebook_size, emb_dim
        attn_resolutions = list(attn_resolutions)
        # the prior's configuration, e.g. to build the frozen HQ teacher of a restoration stage
        self.vqgan_config = dict(img_size=img_size, nf=nf, ch_mult=list(ch_mult), res_blocks=res_blocks,
                                 attn_resolutions=attn_resolutions, codebook_size=codebook_size, emb_dim=emb_dim)
        if norm_groups != 32:
            self.vqgan_config['norm_groups'] = norm_groups
        self.encoder = VQGANEncoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions, norm_groups)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta)
        self.generator = VQGANGenerator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions, norm_groups)
        if model_path is not None:
            load_official_weights(self, model_path, 'params_ema', 'VQGAN')

    @property
    def scale_factor(self):
        """Input size / latent size."""
        return 2**(len(self.ch_mult) - 1)

    @property
    def codebooks(self):
        """[codebook (M, C)]."""
        return [self.quantize.embedding.weight]

    def encode_hq(self, gt):
        """[encoder latent (B, C, H/f, W/f)] of HQ images in [-1, 1]."""
        self.check_input(gt)
        return [self.encoder(gt)]

    def autoencoder_terms(self, output):
        image, codebook_loss, stats = output
        return image, codebook_loss, [stats['min_encoding_indices'].reshape(-1)]

    @property
    def decoder_last_layer(self):
        return self.generator.blocks[-1].weight

    def check_input(self, x):
        f = self.scale_factor
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f'{type(self).__name__}: input of shape {tuple(x.shape)} must be (B, 3, H, W) with H and '
                             f'W divisible by {f}')

    def forward(self, x):
        """(B, 3, H, W) in [-1, 1] -> (image, codebook_loss, stats) as the official release."""
        self.check_input(x)
        quant, codebook_loss, stats = self.quantize(self.encoder(x))
        return self.generator(quant), codebook_loss, stats


@ARCH_REGISTRY.register()
class VQGANDiscriminator(nn.Module):
    """CodeFormer's patch discriminator (``vqgan_discriminator.pth``; 28 keys incl. BatchNorm statistics).

    Args:
        nc (int): Input channels. Default: 3.
        ndf (int): Base channels. Default: 64.
        n_layers (int): Stride-2 stages. Default: 4.
        model_path (str | None): Local checkpoint (``params_d``, else ``params``).
        spectral_norm (bool): Spectral normalisation on every conv (VQFR's PatchGAN; the state-dict then holds
            ``parametrizations.weight.*``). Default: False.
    """

    def __init__(self, nc=3, ndf=64, n_layers=4, model_path=None, spectral_norm=False):
        super().__init__()
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        if spectral_norm:
            layers = [nn.utils.parametrizations.spectral_norm(m) if isinstance(m, nn.Conv2d) else m for m in layers]
        self.main = nn.Sequential(*layers)
        if model_path is not None:
            state_dict, used = read_state_dict(model_path, 'params_d', ('params_d', 'params'))
            load_state_dict_report(self, state_dict, strict=True, source=f'discriminator {model_path} [{used}]')

    def forward(self, x):
        """(B, nc, H, W) -> patch logits (B, 1, H', W')."""
        return self.main(x)


class FuseSFTBlock(nn.Module):
    """Controllable feature transformation: ``dec + w·(dec·scale + shift)``, scale/shift from [enc; dec]."""

    def __init__(self, in_ch, out_ch, norm_groups=32):
        super().__init__()
        self.encode_enc = VQGANResBlock(2 * in_ch, out_ch, norm_groups)
        self.scale = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.shift = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(out_ch, out_ch, 3, 1, 1))

    def forward(self, enc_feat, dec_feat, w=1):
        feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(feat) + self.shift(feat))


def adaptive_instance_normalization(content, style, eps=1e-5):
    """Give each channel of ``content`` the mean/std of ``style`` (std = sqrt(unbiased var + eps)), (B, C, H, W)."""

    def mean_std(t):
        flat = t.flatten(2)
        return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

    c_mean, c_std = mean_std(content)
    s_mean, s_std = mean_std(style)
    return (content - c_mean) / c_std * s_std + s_mean


@ARCH_REGISTRY.register()
class SinCACodeFormer(VQAutoEncoder, VQRestorer):
    """CodeFormer whose code-lookup step is a configurable bottleneck (one codebook).

    encoder -> bottleneck(lq_feat, codebook) -> (AdaIN) -> generator with controllable feature transformation
    (fusion of encoder features at ``connect_list`` resolutions with fidelity weight ``w``). Images in [-1, 1].

    Args:
        bottleneck (dict | str | list): ``{'type': 'sinca' | 'sa' | 'ca' | 'index' | 'nearest' | 'sinca_index',
            ...}``. Default: SinCA with the paper settings (9 layers, 8 heads).
        img_size, nf, ch_mult, res_blocks, attn_resolutions, codebook_size, emb_dim, norm_groups: VQGAN prior
            (defaults: the released 512 configuration; see :class:`VQAutoEncoder` for norm_groups).
        connect_list (list[str]): Resolutions with fusion layers. Default: ['32', '64', '128', '256'].
        fix_modules (list[str]): Modules whose parameters get ``requires_grad=False``.
            Default: ['quantize', 'generator'] (stage 2 adds 'fuse_convs_dict', unused at w = 0).
        vqgan_path (str | None): Stage-1 checkpoint (``vqgan_code1024.pth``) loaded into encoder, codebook and
            generator.

    Official checkpoints load into it: encoder/quantize/generator/fuse_convs_dict keep their names, and with
    the ``index`` bottleneck the transformer keys of ``codeformer.pth`` are mapped under ``bottleneck.``.
    The HQ prior (teacher) is a ``VQAutoEncoder`` of the same configuration (``params_ema`` of its file).
    """

    prior_param_key = 'params_ema'

    def __init__(self, bottleneck=None, img_size=512, nf=64, ch_mult=(1, 2, 2, 4, 4, 8), res_blocks=2,
                 attn_resolutions=(16, ), codebook_size=1024, emb_dim=256, connect_list=('32', '64', '128', '256'),
                 fix_modules=('quantize', 'generator'), vqgan_path=None, norm_groups=32):
        super().__init__(img_size, nf, ch_mult, 'nearest', res_blocks, attn_resolutions, codebook_size, emb_dim,
                         norm_groups=norm_groups)
        if vqgan_path is not None:
            load_official_weights(self, vqgan_path, 'params_ema', 'VQGAN')
        self.connect_list = [str(s) for s in connect_list]
        channels = {str(img_size // 2**i): nf * m for i, m in enumerate(ch_mult)}
        bad = [s for s in self.connect_list if s not in channels]
        if bad:
            raise ValueError(f'connect_list: {bad} are not resolutions of this network '
                             f'(choose among {sorted(channels, key=int)})')
        self.fuse_convs_dict = nn.ModuleDict({s: FuseSFTBlock(channels[s], channels[s], norm_groups)
                                              for s in self.connect_list})

        side = img_size // self.scale_factor
        self.bottleneck = build_bottlenecks(bottleneck, [(codebook_size, emb_dim)], [(side, side)])[0]
        self.register_load_state_dict_pre_hook(self._map_official_index_keys)

        for name in fix_modules or ():
            for p in getattr(self, name).parameters():
                p.requires_grad = False

    @staticmethod
    def _map_official_index_keys(module, state_dict, prefix, *args):
        """codeformer.pth stores the index transformer at the top level; ours lives in ``bottleneck``."""
        if isinstance(module.bottleneck, CodeFormerIndexTransformer):
            map_official_index_keys(state_dict, prefix, 'bottleneck')

    @property
    def bottlenecks(self):
        return [self.bottleneck]

    def prior_config(self):
        return dict(type='VQAutoEncoder', **self.vqgan_config)

    def encode(self, x):
        """(B, 3, H, W) -> ([lq_feat (B, C, H/f, W/f)], context with lq_feat and the encoder features of
        ``connect_list``)."""
        self.check_input(x)
        lq_feat, enc_feats = self.encoder(x, taps=self.connect_list)
        return [lq_feat], {'lq_feat': lq_feat, 'enc_feats': enc_feats}

    def decode(self, feats, context, w=0, adain=False, detach_16=True):
        """Generator on ``feats[0]``.

        Args:
            w (float): Fidelity weight; with ``w > 0`` the fusion layers inject the (detached) encoder features.
            adain (bool): Give the feature lq_feat's channel statistics first (CodeFormer's inference option).
            detach_16 (bool): Detach the feature first (image losses then train only the fusion layers, as in
                CodeFormer stage 3).
        """
        feat = feats[0].detach() if detach_16 else feats[0]
        if adain:
            feat = adaptive_instance_normalization(feat, context['lq_feat'])
        fuse = None
        if w > 0:
            taps, enc_feats = self.generator.level_taps, context['enc_feats']
            fuse = {taps[s]: (lambda x, s=s: self.fuse_convs_dict[s](enc_feats[s].detach(), x, w))
                    for s in self.connect_list}
        return self.generator(feat, fuse)

    def forward(self, x, w=0, detach_16=True, code_only=False, adain=False, return_attn_split=False):
        """
        Args:
            x (Tensor): (B, 3, H, W) in [-1, 1].
            w (float): Fidelity weight of the fusion layers (0 skips them).
            detach_16 (bool): Detach the bottleneck output before the generator. Default: True.
            code_only (bool): Stop after the bottleneck (stage 2).
            adain (bool): Give the bottleneck output lq_feat's channel statistics before decoding.
            return_attn_split (bool): Ask the bottleneck for its attention split.

        Returns:
            RestorerOutput
        """
        return self.restore(x, code_only, return_attn_split, w=w, detach_16=detach_16, adain=adain)


@ARCH_REGISTRY.register()
class CodeFormer(SinCACodeFormer):
    """The official CodeFormer (``codeformer.pth`` loads strictly; same arguments, forward and returns).

    ``forward(x, w=0, detach_16=True, code_only=False, adain=False)`` returns ``(logits, lq_feat)`` with
    ``code_only`` else ``(image, logits, lq_feat)``. Only 512x512 inputs work (the index transformer has a
    16x16 position table), as upstream. The rest of the restorer contract (``restore``, ``encode``, ``decode``,
    targets) is :class:`SinCACodeFormer`'s; to train it, use ``SinCACodeFormer`` with ``bottleneck: {type: index}``
    (the same keys: ``codeformer.pth`` loads into it).
    """

    official_forward = True

    def __init__(self, dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, latent_size=256,
                 connect_list=('32', '64', '128', '256'), fix_modules=('quantize', 'generator'), vqgan_path=None):
        index_opt = {'type': 'index', 'dim_embd': dim_embd, 'n_head': n_head, 'n_layers': n_layers,
                     'latent_size': latent_size}
        super().__init__(index_opt, 512, 64, (1, 2, 2, 4, 4, 8), 2, (16, ), codebook_size, 256, connect_list,
                         fix_modules, vqgan_path)
        self.register_state_dict_post_hook(official_index_key_names)

    def forward(self, x, w=0, detach_16=True, code_only=False, adain=False):
        out = self.restore(x, code_only, w=w, detach_16=detach_16, adain=adain)
        logits, lq_feat = out.bottlenecks[0].logits, out.latents[0]
        return (logits, lq_feat) if code_only else (out.image, logits, lq_feat)
