"""VQFR v1, state-dict compatible with the release: the VQGAN v1 prior (``VQ_Codebook_FFHQ512-39165968.pth``, 275
keys) and the restoration network (``VQFR_v1-33a1fac5.pth``, 459 keys).

v1 differs from v2 (``vqfr_arch.py``, whose warping module and main branch it shares) in its resampling (bilinear
resize + 3x3 conv instead of strided / nearest convs), its quantizer (1x1 ``quant_conv`` 512 -> 256 before and
``post_quant_conv`` 256 -> 512 after the lookup, nearest code only), its shortcut name (``shortcut_conv``), a
learned downsampling of the LQ condition per level and a final 3x3 conv on ``[main feature; x_lq]``.

* :class:`VQGANv1` — the codebook prior (an :class:`HQPrior`).
* :class:`SinCAVQFRv1` — v1 on the restorer contract, the lookup a configurable bottleneck on ``quant_conv``'s
  output (the paper's seam: SinCA's output feeds ``post_quant_conv``).
* :class:`VQFRv1` — the official network: official constructor and key names, ``forward(x_lq, fidelity_ratio=1.0,
  return_keys=('dec', ))`` returning ``{'main_dec'[, 'dec'][, 'feat_dict']}``.

The v1 quantizer's training-only schedule (warm-up without quantization, latent reservoir, k-means re-estimation of
the codebook) runs in training mode (:class:`VQFRv1Quantizer`). Images in [-1, 1], sides multiples of 32. Checked
against the golden case ``vqfr_v1`` in ``tests/archs/test_vqfrv1_arch.py``.
"""
import math

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks, lookup_codes, nearest_code_indices
from basicsr_sinca.archs.codeformer_arch import group_norm
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer
from basicsr_sinca.archs.vqfr_arch import BilinearResizeConv, VQFRMainBranch, conv_out, probed_conv
from basicsr_sinca.archs.vqvaegan_arch import TamingResnetBlock, check_image_input

__all__ = ['VQFRv1Encoder', 'VQFRv1Decoder', 'VQFRv1MainDecoder', 'VQFRv1Quantizer', 'VQGANv1', 'SinCAVQFRv1',
           'VQFRv1', 'kmeans']

KMEANS_KEYS = ('reservoir_size', 'reestimate_iters', 'reestimate_maxiters', 'warmup_iters')


def v1_levels(channel_multipliers, resolution_scale_rates, base_channels):
    """``[(name, channels, rate)]`` fine to coarse: ``Level_k`` is at 1/k of the image (k = running product of the
    rates)."""
    if len(channel_multipliers) != len(resolution_scale_rates):
        raise ValueError(f'channel_multipliers ({len(channel_multipliers)}) and resolution_scale_rates '
                         f'({len(resolution_scale_rates)}) must have the same length')
    levels, k = [], 1
    for mult, rate in zip(channel_multipliers, resolution_scale_rates):
        k *= rate
        levels.append((f'Level_{k}', base_channels * mult, rate))
    return levels


def resnet_blocks(channels, num_blocks):
    return nn.Sequential(*[TamingResnetBlock(channels, channels, shortcut='shortcut_conv') for _ in range(num_blocks)])


class VQFRv1Encoder(nn.Module):
    """``conv_in``; per level ``pre_downsample_dict`` (bilinear 1/rate + conv c_prev -> c; not at Level_1) then
    ``encoder_dict`` (ResnetBlocks); ``enc_convout_dict.Level_32`` (GN, SiLU, conv). (B, 3, H, W) -> (B, c, H/32,
    W/32)."""

    def __init__(self, base_channels=128, channel_multipliers=(1, 1, 2, 2, 2, 4),
                 resolution_scale_rates=(1, 2, 2, 2, 2, 2), num_blocks=2):
        super().__init__()
        levels = v1_levels(channel_multipliers, resolution_scale_rates, base_channels)
        self.conv_in = nn.Conv2d(3, levels[0][1], 3, 1, 1)
        self.encoder_dict = nn.ModuleDict({name: resnet_blocks(c, num_blocks) for name, c, _ in levels})
        self.pre_downsample_dict = nn.ModuleDict({
            name: BilinearResizeConv(levels[i - 1][1], c, 1 / rate) for i, (name, c, rate) in enumerate(levels) if i})
        self.enc_convout_dict = nn.ModuleDict({levels[-1][0]: conv_out(levels[-1][1], levels[-1][1])})
        self.levels = [name for name, _, _ in levels]

    def forward(self, x):
        x = self.conv_in(x)
        for name in self.levels:
            if name in self.pre_downsample_dict:
                x = self.pre_downsample_dict[name](x)
            x = self.encoder_dict[name](x)
        return self.enc_convout_dict[self.levels[-1]](x)


class VQFRv1Decoder(nn.Module):
    """Texture decoder: per level (coarse to fine) ``pre_upsample_dict`` (conv c_prev -> c then bilinear x rate; not at
    the coarsest) and ``decoder_dict`` (ResnetBlocks); ``conv_out`` (GN, SiLU, conv -> RGB).

    :meth:`forward` returns every level's feature ``{'Level_32': ..., ..., 'Level_1': ...}``.
    """

    def __init__(self, base_channels=128, channel_multipliers=(1, 1, 2, 2, 2, 4),
                 resolution_scale_rates=(1, 2, 2, 2, 2, 2), num_blocks=3):
        super().__init__()
        levels = v1_levels(channel_multipliers, resolution_scale_rates, base_channels)[::-1]
        self.decoder_dict = nn.ModuleDict({name: resnet_blocks(c, num_blocks) for name, c, _ in levels})
        # the upsampling into level j undoes the rate of level j - 1 (the finer level's rate in encoder order)
        self.pre_upsample_dict = nn.ModuleDict({
            name: BilinearResizeConv(levels[j - 1][1], c, levels[j - 1][2], conv_first=True)
            for j, (name, c, _) in enumerate(levels) if j})
        self.conv_out = conv_out(levels[-1][1], 3)
        self.levels = [name for name, _, _ in levels]

    def forward(self, x):
        feats = {}
        for name in self.levels:
            if name in self.pre_upsample_dict:
                x = self.pre_upsample_dict[name](x)
            x = feats[name] = self.decoder_dict[name](x)
        return feats


class VQFRv1MainDecoder(VQFRMainBranch):
    """v1's main decoder: the v1 main branch, then ``conv_out.0``(cat[``conv_out_1``(x), x_lq]) -> RGB."""

    def __init__(self, channels, cond_channels=32, deformable_groups=4):
        super().__init__(channels, cond_channels, deformable_groups, version=1)
        self.conv_out_1 = nn.Sequential(group_norm(channels[-1]), nn.SiLU())
        self.conv_out = nn.Sequential(nn.Conv2d(channels[-1] + 3, 3, 3, 1, 1))

    def forward(self, inpfeat, textures, x_lq, probes=None):
        """-> (B, 3, H, W); ``probes``: see :func:`~basicsr_sinca.archs.vqfr_arch.probed_conv` (key ``image``)."""
        x = torch.cat([self.conv_out_1(self.fuse(inpfeat, textures)), x_lq], dim=1)
        return self.conv_out(x) if probes is None else probed_conv(probes, 'image', self.conv_out[0], x)


def kmeans(samples, num_clusters, iters=20, generator=None):
    """Lloyd's k-means on (N, C) ``samples`` from random distinct samples; an emptied cluster is re-seeded with a
    random sample. Returns (num_clusters, C) centres."""
    n = samples.shape[0]
    if n < num_clusters:
        raise ValueError(f'k-means: {n} samples for {num_clusters} clusters (fill the reservoir first)')
    centres = samples[torch.randperm(n, generator=generator, device='cpu')[:num_clusters].to(samples.device)].clone()
    for _ in range(iters):
        assign = torch.cdist(samples, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, samples)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        empty = counts == 0
        centres = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            pick = torch.randint(n, (int(empty.sum()), ), generator=generator, device='cpu').to(samples.device)
            centres[empty] = samples[pick]
    return centres


class VQFRv1Quantizer(nn.Module):
    """``quant_conv`` (in_dim -> code_dim), ``post_quant_conv`` (code_dim -> in_dim) and the codebook ``embedding``,
    with ``L2VectorQuantizerKmeans``'s training-only schedule (counted in training-mode forwards):

    * ``warmup_iters`` (> 0): the first forwards pass the latent through unquantized (loss 0);
    * a reservoir of the last ``reservoir_size`` latent vectors (non-persistent, as upstream; it and the step count
      travel in the training state through ``training_state_dict``, so a resumed run re-estimates as the
      uninterrupted one would);
    * every ``reestimate_iters`` forwards up to ``reestimate_maxiters`` the codebook is re-estimated by k-means
      on the reservoir. -1 disables a step (the released test configs disable all).
    """

    def __init__(self, in_dim=512, num_code=1024, code_dim=256, reservoir_size=16384, reestimate_iters=2000,
                 reestimate_maxiters=-1, warmup_iters=-1):
        super().__init__()
        self.quant_conv = nn.Conv2d(in_dim, code_dim, 1)
        self.post_quant_conv = nn.Conv2d(code_dim, in_dim, 1)
        self.embedding = nn.Embedding(num_code, code_dim)
        self.reservoir_size, self.reestimate_iters = reservoir_size, reestimate_iters
        self.reestimate_maxiters, self.warmup_iters = reestimate_maxiters, warmup_iters
        self.register_buffer('reservoir', torch.zeros(0, code_dim), persistent=False)
        self.train_steps = 0

    def training_state_dict(self):
        """The schedule's state outside the state dict (the release has no such keys): step count and reservoir."""
        return {'train_steps': self.train_steps, 'reservoir': self.reservoir.detach().cpu().clone()}

    def load_training_state_dict(self, state):
        """Continue the schedule from :meth:`training_state_dict` (resume)."""
        self.train_steps = int(state['train_steps'])
        self.reservoir = state['reservoir'].to(self.embedding.weight)

    @torch.no_grad()
    def update_codebook_schedule(self, z):
        """The training-only part: count, fill the reservoir, re-estimate by k-means when due."""
        self.train_steps += 1
        tokens = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        self.reservoir = torch.cat([self.reservoir.to(tokens), tokens])[-self.reservoir_size:]
        step, every, last = self.train_steps, self.reestimate_iters, self.reestimate_maxiters
        if every > 0 and step % every == 0 and (last < 0 or step <= last) and \
                self.reservoir.shape[0] >= self.embedding.num_embeddings:
            self.embedding.weight.data.copy_(kmeans(self.reservoir.float(), self.embedding.num_embeddings))

    def forward(self, z):
        """z_conv (B, C, h, w) -> (straight-through quantized latent, loss ``1.25 · mean((e - z)²)`` in value,
        indices (B, h·w) or None during the warm-up)."""
        if self.training:
            self.update_codebook_schedule(z)
            if self.warmup_iters > 0 and self.train_steps <= self.warmup_iters:
                return z, z.new_zeros(()), None
        codebook = self.embedding.weight
        indices, _ = nearest_code_indices(z, codebook)
        e = lookup_codes(indices, codebook)
        loss = torch.mean((e.detach() - z)**2) + 0.25 * torch.mean((e - z.detach())**2)
        return z + (e - z).detach(), loss, indices.flatten(1)


class VQFRv1QuantizerDict(nn.Module):
    """The official container: ``quantize_dict.<coarsest level>`` (``Level_32`` in the releases, which quantize that
    level only)."""

    def __init__(self, quantizer_opt, in_dim, level_name='Level_32'):
        super().__init__()
        self.level_name = level_name
        opt = quantizer_opt or {level_name: {'type': 'L2VectorQuantizerKmeans', 'in_dim': in_dim, 'num_code': 1024,
                                             'code_dim': 256}}
        if set(opt) != {level_name}:
            raise ValueError(f'quantizer_opt: levels {sorted(opt)}; only the coarsest, {level_name}, is supported '
                             '(as the releases)')
        level = dict(opt[level_name])
        unknown = set(level) - {'type', 'in_dim', 'num_code', 'code_dim', *KMEANS_KEYS}
        if unknown:
            raise ValueError(f'quantizer_opt.{level_name}: unknown keys {sorted(unknown)}')
        if level.get('type', 'L2VectorQuantizerKmeans') not in ('L2VectorQuantizerKmeans', 'L2VectorQuantizer'):
            raise ValueError(f"quantizer_opt.{level_name}.type: {level['type']!r} is not a VQFR v1 quantizer")
        if int(level.get('in_dim', in_dim)) != in_dim:
            raise ValueError(f"quantizer_opt.{level_name}.in_dim: {level['in_dim']} but the encoder gives {in_dim}")
        schedule = {k: int(level[k]) for k in KMEANS_KEYS if k in level}
        self.quantize_dict = nn.ModuleDict({
            level_name: VQFRv1Quantizer(in_dim, int(level.get('num_code', 1024)), int(level.get('code_dim', 256)),
                                        **schedule)})

    @property
    def level(self):
        return self.quantize_dict[self.level_name]


def vqgan_v1_config(base_channels, proj_patch_size, resolution_scale_rates, channel_multipliers, encoder_num_blocks,
                    decoder_num_blocks, quant_level, quantizer_opt):
    if math.prod(resolution_scale_rates) != proj_patch_size:
        raise ValueError(f'proj_patch_size {proj_patch_size} must equal the product of resolution_scale_rates')
    coarsest = f'Level_{proj_patch_size}'
    quant_level = [coarsest] if quant_level is None else list(quant_level)
    if quant_level != [coarsest]:
        raise ValueError(f'quant_level: {quant_level}; only the coarsest level [{coarsest!r}] is supported (as the '
                         'releases)')
    return dict(base_channels=base_channels, proj_patch_size=proj_patch_size,
                resolution_scale_rates=list(resolution_scale_rates), channel_multipliers=list(channel_multipliers),
                encoder_num_blocks=encoder_num_blocks, decoder_num_blocks=decoder_num_blocks,
                quant_level=quant_level, quantizer_opt=quantizer_opt)


class VQGANv1Parts(nn.Module):
    """The modules VQGAN v1 and VQFR v1 share, registered in the official order (encoder, decoder, [main decoder],
    quantizer): subclasses call :meth:`build_vqgan` and :meth:`build_quantizer` around their own modules."""

    def build_vqgan(self, config):
        self.vqgan_config = config
        self.scale_factor = config['proj_patch_size']
        args = (config['base_channels'], config['channel_multipliers'], config['resolution_scale_rates'])
        self.encoder = VQFRv1Encoder(*args, config['encoder_num_blocks'])
        self.decoder = VQFRv1Decoder(*args, config['decoder_num_blocks'])

    def build_quantizer(self):
        top = self.vqgan_config['base_channels'] * self.vqgan_config['channel_multipliers'][-1]
        self.quantizer = VQFRv1QuantizerDict(self.vqgan_config['quantizer_opt'], top,
                                             self.vqgan_config['quant_level'][0])

    @property
    def codebooks(self):
        return [self.quantizer.level.embedding.weight]

    @property
    def decoder_last_layer(self):
        return self.decoder.conv_out[-1].weight

    def z_conv(self, x):
        """``quant_conv`` of the encoder output: the latent that is quantized, (B, code_dim, H/32, W/32)."""
        check_image_input(self, x, self.scale_factor, channels=3)
        return self.quantizer.level.quant_conv(self.encoder(x))

    def texture_features(self, feat):
        """Code-space feature (B, code_dim, h, w) -> ``post_quant_conv`` -> the texture decoder's level features."""
        return self.decoder(self.quantizer.level.post_quant_conv(feat))


@ARCH_REGISTRY.register()
class VQGANv1(VQGANv1Parts, HQPrior):
    """VQFR v1's codebook prior (275 keys). Official arguments as :class:`VQFRv1`'s VQGAN part.

    ``forward(x, return_keys=('dec', ))`` returns ``({'z_conv', 'quant_feat', 'quant_index'[, 'dec']}, emb_loss)``
    with ``emb_loss = 1.25 · mean((e - z)²)`` (the v1 quantizer's loss in value).
    """

    image_range = (-1.0, 1.0)

    def __init__(self, base_channels=128, proj_patch_size=32, resolution_scale_rates=(1, 2, 2, 2, 2, 2),
                 channel_multipliers=(1, 1, 2, 2, 2, 4), encoder_num_blocks=2, decoder_num_blocks=3,
                 quant_level=None, quantizer_opt=None):
        super().__init__()
        self.build_vqgan(vqgan_v1_config(base_channels, proj_patch_size, resolution_scale_rates, channel_multipliers,
                                         encoder_num_blocks, decoder_num_blocks, quant_level, quantizer_opt))
        self.build_quantizer()

    def encode_hq(self, gt):
        return [self.z_conv(gt)]

    def forward(self, x, return_keys=('dec', )):
        z = self.z_conv(x)
        quant, emb_loss, indices = self.quantizer.level(z)
        res = {'z_conv': z, 'quant_feat': quant, 'quant_index': indices}
        if 'dec' in return_keys:
            res['dec'] = self.decoder.conv_out(self.texture_features(quant)['Level_1'])
        return res, emb_loss

    def autoencoder_terms(self, output):
        res, emb_loss = output
        if res['quant_index'] is None:  # k-means warm-up: nothing quantized yet
            return res['dec'], emb_loss, [torch.zeros(0, dtype=torch.long, device=emb_loss.device)]
        return res['dec'], emb_loss, [res['quant_index'].reshape(-1)]


@ARCH_REGISTRY.register()
class SinCAVQFRv1(VQGANv1Parts, VQRestorer):
    """VQFR v1 whose lookup is a configurable bottleneck on ``z_conv`` (one codebook).

    encoder -> ``quant_conv`` -> bottleneck (``quantizer...embedding``) -> ``post_quant_conv`` -> texture decoder
    (its image goes to ``context['texture_dec']``) -> main decoder (warped toward ``inpfeat_extraction(x_lq)``,
    last conv on ``[feature; x_lq]``) -> the image.

    Args:
        bottleneck (dict | str | list): ``{'type': 'nearest' | 'sinca' | 'sa' | 'ca' | 'sinca_index', ...}``.
            Default: SinCA with the paper settings.
        img_size (int): Face size the bottleneck's positions are built for. Default: 512.
        base_channels ... quantizer_opt: the official arguments (defaults: the release). ``align_opt`` per level
            ``{'cond_channels', 'cond_downscale_rate' (= k), 'deformable_groups'}``; ``fix_keys``: parameters whose
            name contains one of these strings are frozen (official: ``['embedding']``).
    """

    image_range = (-1.0, 1.0)

    def __init__(self, bottleneck=None, img_size=512, base_channels=128, proj_patch_size=32,
                 resolution_scale_rates=(1, 2, 2, 2, 2, 2), channel_multipliers=(1, 1, 2, 2, 2, 4),
                 encoder_num_blocks=2, decoder_num_blocks=3, quant_level=None, fix_keys=('embedding', ),
                 inpfeat_extraction_opt=None, align_from_patch=32, align_opt=None, quantizer_opt=None):
        super().__init__()
        config = vqgan_v1_config(base_channels, proj_patch_size, resolution_scale_rates, channel_multipliers,
                                 encoder_num_blocks, decoder_num_blocks, quant_level, quantizer_opt)
        levels = v1_levels(channel_multipliers, resolution_scale_rates, base_channels)[::-1]
        if align_from_patch != int(levels[0][0].split('_')[1]):
            raise ValueError(f'align_from_patch: {align_from_patch}; only the coarsest level '
                             f'({levels[0][0]}) is supported (the release)')
        inp = dict({'in_dim': 3, 'out_dim': 32}, **(inpfeat_extraction_opt or {}))
        cond_channels, groups = check_align_opt(align_opt, [name for name, _, _ in levels], inp['out_dim'])
        self.img_size = img_size
        self.inpfeat_extraction = InputFeatureExtraction(inp['in_dim'], inp['out_dim'])
        self.build_vqgan(config)
        self.main_decoder = VQFRv1MainDecoder([c for _, c, _ in levels], cond_channels, groups)
        self.build_quantizer()
        level = self.quantizer.level
        side = img_size // proj_patch_size
        self.bottleneck = build_bottlenecks(bottleneck, [tuple(level.embedding.weight.shape)], [(side, side)])[0]
        self.weight_probes = {}
        self.fix_keys = list(fix_keys or ())
        for name, p in self.named_parameters():
            if any(k in name for k in self.fix_keys):
                p.requires_grad = False

    @property
    def bottlenecks(self):
        return [self.bottleneck]

    def prior_config(self):
        return dict(type='VQGANv1', **self.vqgan_config)

    def encode(self, x_lq):
        """(B, 3, H, W) -> ([z_conv (B, code_dim, H/32, W/32)], {'inpfeat': (B, 32, H, W), 'x_lq'})."""
        return [self.z_conv(x_lq)], {'inpfeat': self.inpfeat_extraction(x_lq), 'x_lq': x_lq}

    def decode(self, feats, context):
        textures = self.texture_features(feats[0])
        context['texture_dec'] = probed_conv(self.weight_probes, 'texture_dec', self.decoder.conv_out[-1],
                                             self.decoder.conv_out[:-1](textures['Level_1']))
        return self.main_decoder(context['inpfeat'], textures, context['x_lq'], self.weight_probes)

    @property
    def decoder_last_layer(self):
        return self.output_last_layer('image')

    def output_last_layer(self, output='image'):
        """The main decoder's last conv (``image``) or the texture decoder's (``texture_dec``), as the last forward
        used them (see :func:`~basicsr_sinca.archs.vqfr_arch.probed_conv`)."""
        layers = {'image': self.main_decoder.conv_out[0], 'texture_dec': self.decoder.conv_out[-1]}
        if output not in layers:
            raise ValueError(f'{type(self).__name__}: no last layer for output {output!r} (image, texture_dec)')
        return self.weight_probes.get(output, layers[output].weight)


class InputFeatureExtraction(nn.Module):
    """v1's LQ feature: one 3x3 ``conv`` (3 -> 32)."""

    def __init__(self, in_dim=3, out_dim=32):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, 1, 1)

    def forward(self, x):
        return self.conv(x)


def check_align_opt(align_opt, levels, inpfeat_dim):
    """v1's per-level ``align_opt`` -> (cond_channels, deformable_groups), equal across levels; each level's
    ``cond_downscale_rate`` must be its k."""
    if not align_opt:
        return inpfeat_dim, 4
    if set(align_opt) != set(levels):
        raise ValueError(f'align_opt: levels {sorted(align_opt)}, expected {sorted(levels)}')
    seen = set()
    for name in levels:
        opt = dict(align_opt[name])
        unknown = set(opt) - {'cond_channels', 'cond_downscale_rate', 'deformable_groups'}
        if unknown:
            raise ValueError(f'align_opt.{name}: unknown keys {sorted(unknown)}')
        k = int(name.split('_')[1])
        if int(opt.get('cond_downscale_rate', k)) != k:
            raise ValueError(f"align_opt.{name}.cond_downscale_rate: {opt['cond_downscale_rate']}, expected {k}")
        seen.add((int(opt.get('cond_channels', inpfeat_dim)), int(opt.get('deformable_groups', 4))))
    if len(seen) != 1:
        raise ValueError(f'align_opt: cond_channels / deformable_groups must be equal across levels, got {seen}')
    (cond, groups), = seen
    if cond != inpfeat_dim:
        raise ValueError(f'align_opt: cond_channels {cond} but inpfeat_extraction_opt.out_dim is {inpfeat_dim}')
    return cond, groups


@ARCH_REGISTRY.register()
class VQFRv1(SinCAVQFRv1):
    """The official VQFR v1 (``VQFR_v1-33a1fac5.pth``, 459 keys; nearest-code lookup; loads strictly).

    ``forward(x_lq, fidelity_ratio=1.0, return_keys=('dec', ))`` returns ``{'main_dec'}`` plus ``'dec'`` (texture
    image) and ``'feat_dict'`` (``{'Level_32': {'z_conv', 'z_quant_before_conv'}}``) when asked; ``fidelity_ratio``
    is accepted and ignored, as upstream. To train, use :class:`SinCAVQFRv1` with ``bottleneck: nearest``.
    """

    official_forward = True

    def __init__(self, base_channels=128, proj_patch_size=32, resolution_scale_rates=(1, 2, 2, 2, 2, 2),
                 channel_multipliers=(1, 1, 2, 2, 2, 4), encoder_num_blocks=2, decoder_num_blocks=3,
                 quant_level=None, fix_keys=('embedding', ), inpfeat_extraction_opt=None,
                 align_from_patch=32, align_opt=None, quantizer_opt=None):
        super().__init__('nearest', 512, base_channels, proj_patch_size, resolution_scale_rates, channel_multipliers,
                         encoder_num_blocks, decoder_num_blocks, quant_level, fix_keys, inpfeat_extraction_opt,
                         align_from_patch, align_opt, quantizer_opt)

    def forward(self, x_lq, fidelity_ratio=1.0, return_keys=('dec', )):
        out = self.restore(x_lq)
        res = {'main_dec': out.image}
        if 'dec' in return_keys:
            res['dec'] = out.context['texture_dec']
        if 'feat_dict' in return_keys:
            res['feat_dict'] = {self.quantizer.level_name: {'z_conv': out.latents[0],
                                                            'z_quant_before_conv': out.bottlenecks[0].feat}}
        return res
