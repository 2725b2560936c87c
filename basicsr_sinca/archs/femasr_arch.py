"""FeMaSR family, state-dict compatible with the official release.

* :class:`FeMaSRNet` — the official network (HQ prior and x2/x4 SR nets): same constructor, ``forward`` /
  ``test`` signatures and returns, key names (``FeMaSR_SRX4_model_g.pth``, ``FeMaSR_SRX2_model_g.pth``).
* :class:`SinCAFeMaSRNet` — the same network on the restorer contract (:class:`VQRestorer`) with the VQ step at
  the codebook scale replaced by a bottleneck chosen in YAML (``sinca``, ``sa``, ``ca``, ``sinca_index``,
  ``nearest``); every other key keeps its official name, so the released HQ prior initialises decoder,
  codebook and quantiser convs. The HQ prior (an :class:`HQPrior`) is the same class with ``LQ_stage=False``.

Images are in [0, 1]. The encoder's Swin stack is BasicSR's own SwinIR ``RSTB`` (identical keys). Facts
follow the official release (checked against golden cases in ``tests/archs/test_femasr_arch.py``); the code
is ours.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.archs.swinir_arch import RSTB
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks, lookup_codes
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer

__all__ = [
    'FeMaSRResBlock', 'SwinLayers', 'MultiScaleEncoder', 'DecoderBlock', 'CombineQuantBlock', 'SinCAFeMaSRNet',
    'FeMaSRNet', 'femasr_feature_loss', 'gram_loss'
]

# channels per feature resolution (fixed in FeMaSR)
CHANNELS = {8: 256, 16: 256, 32: 256, 64: 256, 128: 128, 256: 64, 512: 32}
# keys of the released HQ prior FeMaSR_HRP_model_g.pth that belong to its HQ-pretraining semantic branch
# (no effect on the forward; dropped on load)
SEMANTIC_PREFIXES = ('conv_semantic.', 'vgg_feat_extractor.')


class GroupNorm32(nn.Module):
    """GroupNorm(32, eps 1e-6) stored as ``.norm`` (FeMaSR's norm wrapper, hence keys ``*.norm.weight``)."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)

    def forward(self, x):
        return self.norm(x)


class FeMaSRResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(norm(conv(silu(norm(x))))))`` (keys ``conv.{0,2,3,5}``)."""

    def __init__(self, channels, norm_type='gn', act_type='silu'):
        super().__init__()
        if norm_type != 'gn' or act_type != 'silu':
            raise ValueError(f"FeMaSR blocks: only norm_type='gn' and act_type='silu' (the release) are supported, "
                             f'got {norm_type!r} / {act_type!r}')
        self.conv = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1),
                                  GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x):
        return x + self.conv(x)


class SwinLayers(nn.Module):
    """Four SwinIR residual Swin groups (``swin_blks``) on a (B, C, H, W) map; H, W multiples of ``window_size``."""

    def __init__(self, input_resolution=(32, 32), embed_dim=256, blk_depth=6, num_heads=8, window_size=8):
        super().__init__()
        self.window_size = window_size
        self.swin_blks = nn.ModuleList([
            RSTB(embed_dim, input_resolution, blk_depth, num_heads, window_size, patch_size=1) for _ in range(4)
        ])

    def forward(self, x):
        b, c, h, w = x.shape
        if h % self.window_size or w % self.window_size:
            raise ValueError(f'SwinLayers: feature of shape {tuple(x.shape)} must have H and W divisible by the '
                             f'window size {self.window_size}')
        tokens = x.flatten(2).transpose(1, 2)
        for blk in self.swin_blks:
            tokens = blk(tokens, (h, w))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


def _up_block(in_ch, out_ch, norm_type, act_type):
    """[nearest x2, 3x3 conv, ResBlock, ResBlock] (indices 0..3, as the official checkpoints)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(in_ch, out_ch, 3, 1, 1),
                         FeMaSRResBlock(out_ch, norm_type, act_type), FeMaSRResBlock(out_ch, norm_type, act_type))


class MultiScaleEncoder(nn.Module):
    """4x4 stem (H shrinks by one), ``max_depth`` stride-2 stages; the LQ (SR) encoder adds SwinLayers and two
    upsamplers whose outputs feed the decoder as skips. ``forward`` returns every block output."""

    def __init__(self, in_channel, max_depth, input_res, norm_type='gn', act_type='silu', LQ_stage=True,
                 channels=None, swin_opt=None):
        super().__init__()
        ch = channels or CHANNELS
        self.in_conv = nn.Conv2d(in_channel, ch[input_res], 4, padding=1)
        blocks, res = [], input_res
        for _ in range(max_depth):
            in_ch, out_ch = ch[res], ch[res // 2]
            blocks.append(nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                                        FeMaSRResBlock(out_ch, norm_type, act_type),
                                        FeMaSRResBlock(out_ch, norm_type, act_type)))
            res //= 2
        if LQ_stage:
            swin = dict({'input_resolution': (res, res), 'embed_dim': ch[res]}, **(swin_opt or {}))
            blocks.append(SwinLayers(**swin))
            for _ in range(2):
                blocks.append(_up_block(ch[res], ch[res * 2], norm_type, act_type))
                res *= 2
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        outs = []
        x = self.in_conv(x)
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class DecoderBlock(nn.Module):
    """``block`` = [nearest x2, 3x3 conv in->out, ResBlock, ResBlock]."""

    def __init__(self, in_channel, out_channel, norm_type='gn', act_type='silu'):
        super().__init__()
        self.block = _up_block(in_channel, out_channel, norm_type, act_type)

    def forward(self, x):
        return self.block(x)


class CombineQuantBlock(nn.Module):
    """One 3x3 ``conv`` after the quantiser (a second input, unused by the release, would be concatenated)."""

    def __init__(self, in_ch1, in_ch2, out_channel):
        super().__init__()
        self.conv = nn.Conv2d(in_ch1 + in_ch2, out_channel, 3, 1, 1)

    def forward(self, input1, input2=None):
        if input2 is not None:
            input1 = torch.cat([input1, F.interpolate(input2, input1.shape[2:])], dim=1)
        return self.conv(input1)


class FeMaSRCodebook(nn.Module):
    """Holds the frozen codebook as ``embedding`` (official key ``quantize_group.0.embedding.weight``)."""

    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)


def gram_loss(x, y):
    """Mean squared difference of the per-sample C x C Gram matrices ``a^T a / (h·w)`` of (B, C, H, W) maps."""
    b, c, h, w = x.shape
    gx = x.flatten(2) @ x.flatten(2).transpose(1, 2) / (h * w)
    gy = y.flatten(2) @ y.flatten(2).transpose(1, 2) / (h * w)
    return (gx - gy).square().mean()


def femasr_feature_loss(feat, target, beta=0.25):
    """FeMaSR's LQ-stage codebook loss: ``beta·mean((sg(target) - feat)^2) + gram(feat, sg(target))``."""
    target = target.detach()
    return beta * (target - feat).square().mean() + gram_loss(feat, target)


@ARCH_REGISTRY.register()
class SinCAFeMaSRNet(VQRestorer, HQPrior):
    """FeMaSR whose VQ step at the codebook scale is a configurable bottleneck.

    encoder -> before_quant (1x1) -> bottleneck(feat, codebook) -> after_quant (3x3) -> decoder (+ encoder
    skips in the SR stage) -> out_conv. Inputs in [0, 1]; H, W of the LR input must make the latent a multiple
    of 8 (use :meth:`test` for any size). With ``LQ_stage=False`` it is the HQ prior: :meth:`encode_hq` gives
    the feature entering its quantiser; the released ``FeMaSR_HRP_model_g.pth`` loads strictly (its semantic
    branch keys are dropped).

    Args:
        bottleneck (dict | str | list): ``{'type': 'sinca' | 'sa' | 'ca' | 'sinca_index' | 'nearest', ...}``.
            Default: SinCA with the paper settings (9 layers, 8 heads).
        in_channel (int): Image channels. Default: 3.
        codebook_params (list): ``[[32, n_codes, dim]]`` (one codebook at the 1/8 latent). Default: [[32, 1024, 512]].
        gt_resolution (int): HR training size. Default: 256.
        LQ_stage (bool): SR net (True) or HQ prior (False). Default: True.
        norm_type / act_type (str): 'gn' / 'silu' (the release).
        scale_factor (int): SR factor (forced to 1 for the HQ prior). Default: 4.
        use_residual (bool): Encoder -> decoder skips in the SR stage. Default: True.
        frozen_module_keywords (list[str]): Modules whose name contains one of these get ``requires_grad=False``
            (FeMaSR: ['quantize', 'decoder', 'after_quant_group', 'out_conv']).
        channels (dict | None): Channels per feature resolution (default: FeMaSR's fixed table; smaller tables
            give CPU-sized test networks). Multiples of 32.
        swin_opt (dict | None): Overrides of the encoder's SwinLayers (``blk_depth`` 6, ``num_heads`` 8,
            ``window_size`` 8).
    """

    image_range = (0.0, 1.0)

    def __init__(self, bottleneck=None, in_channel=3, codebook_params=((32, 1024, 512), ), gt_resolution=256,
                 LQ_stage=True, norm_type='gn', act_type='silu', scale_factor=4, use_residual=True,
                 frozen_module_keywords=None, channels=None, swin_opt=None, **ignore_kwargs):
        super().__init__()
        ch = {int(k): int(v) for k, v in (channels or CHANNELS).items()}
        self.window_size = int((swin_opt or {}).get('window_size', 8))
        self.codebook_params = [[int(v) for v in p] for p in codebook_params]
        self.check_codebook_params(self.codebook_params)
        self.codebook_scale = self.codebook_params[0][0]
        # the architecture without the bottleneck, e.g. to build the matching HQ prior (teacher)
        self.femasr_config = dict(in_channel=in_channel, codebook_params=self.codebook_params,
                                  gt_resolution=gt_resolution, norm_type=norm_type, act_type=act_type,
                                  channels=channels, swin_opt=swin_opt)
        self.gt_res, self.LQ_stage, self.use_residual = gt_resolution, LQ_stage, use_residual
        self.scale_factor = scale_factor if LQ_stage else 1
        self.max_depth = int(math.log2(gt_resolution // self.codebook_scale))
        encode_depth = int(math.log2(gt_resolution // self.scale_factor // self.codebook_scale))
        self.multiscale_encoder = MultiScaleEncoder(in_channel, encode_depth, gt_resolution // self.scale_factor,
                                                    norm_type, act_type, LQ_stage, ch, swin_opt)
        self.decoder_group = nn.ModuleList()
        for i in range(self.max_depth):
            res = self.codebook_scale * 2**i
            self.decoder_group.append(DecoderBlock(ch[res], ch[res * 2], norm_type, act_type))
        self.out_conv = nn.Conv2d(ch[self.codebook_scale * 2**self.max_depth], 3, 3, 1, 1)
        self.build_quantizers(ch[self.codebook_scale], swin_opt)

        side = self.codebook_scale  # the latent's side at gt_resolution (the index transformer's position table)
        shapes = [(n, d) for _, n, d in self.codebook_params]
        bottlenecks = build_bottlenecks(bottleneck, shapes, [(side, side)] * len(shapes))
        self.bottleneck = bottlenecks[0] if len(shapes) == 1 else bottlenecks  # official-style single-codebook keys
        self.register_load_state_dict_pre_hook(self._drop_semantic_keys)
        self.frozen_module_keywords = list(frozen_module_keywords or [])
        for name, module in self.named_modules():
            if any(k in name for k in self.frozen_module_keywords):
                for p in module.parameters():
                    p.requires_grad = False

    @staticmethod
    def check_codebook_params(codebook_params):
        if len(codebook_params) != 1:
            raise ValueError(f'codebook_params: one codebook row [scale, n_codes, dim] is supported (every FeMaSR '
                             f'release), got {codebook_params}')

    def build_quantizers(self, scale_ch, swin_opt):
        """``quantize_group`` (the codebook), ``before_quant_group`` (1x1), ``after_quant_group`` (3x3 ``.conv``)."""
        _, n, dim = self.codebook_params[0]
        self.codebook_size, self.codebook_dim = n, dim
        self.quantize_group = nn.ModuleList([FeMaSRCodebook(n, dim)])
        self.before_quant_group = nn.ModuleList([nn.Conv2d(scale_ch, dim, 1)])
        self.after_quant_group = nn.ModuleList([CombineQuantBlock(dim, 0, scale_ch)])

    @staticmethod
    def _drop_semantic_keys(module, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].startswith(SEMANTIC_PREFIXES)]:
            del state_dict[key]

    @property
    def codebooks(self):
        """The frozen codebooks (M_i, C_i), one per ``quantize_group`` entry."""
        return [q.embedding.weight for q in self.quantize_group]

    @property
    def bottlenecks(self):
        return list(self.bottleneck) if isinstance(self.bottleneck, nn.ModuleList) else [self.bottleneck]

    def prior_config(self):
        return dict(type='FeMaSRNet', **dict(self.femasr_config, LQ_stage=False))

    def encode_hq(self, gt):
        """[feature entering the quantiser (B, C, h, w)] of HQ images in [0, 1] (the HQ prior's targets)."""
        return self.encode(gt)[0]

    @property
    def decoder_last_layer(self):
        return self.out_conv.weight

    @property
    def latent_factor(self):
        """LR pixels per latent pixel."""
        return self.gt_res // self.scale_factor // self.codebook_scale

    @property
    def size_multiple(self):
        """LR sides must be multiples of this (latent multiple of the Swin window) for :meth:`forward`."""
        return self.latent_factor * self.window_size

    def encode(self, x):
        """(B, 3, h, w) -> (latents, context): ``latents[i]`` = ``before_quant_group[i]`` of the encoder's
        codebook-scale feature (B, C_i, h', w'); ``context`` holds that feature (``feat_before_quant``) and the
        decoder's ``skips``."""
        feats = self.multiscale_encoder(x)
        feats = feats[-3:] if self.LQ_stage else feats[::-1]
        latents = [conv(feats[0]) for conv in self.before_quant_group]
        return latents, {'feat_before_quant': feats[0], 'skips': feats[1:]}

    def combine_codes(self, feats, context):
        """Codebook-space features -> the decoder's input (FeMaSR: ``after_quant_group[0]``)."""
        return self.after_quant_group[0](feats[0])

    def decode(self, feats, context):
        """Codebook-space features (one (B, C_i, h', w') per codebook) -> image (B, 3, 8h', 8w'); the decoder's
        input is left in ``context['feat_before_decoder']``."""
        x = context['feat_before_decoder'] = self.combine_codes(feats, context)
        for i, block in enumerate(self.decoder_group):
            if i > 0 and self.LQ_stage and self.use_residual:
                x = x + context['skips'][i - 1]
            x = block(x)
        return self.out_conv(x)

    def forward(self, x, code_only=False, return_attn_split=False):
        """
        Args:
            x (Tensor): LR (B, 3, h, w) in [0, 1], h and w multiples of :attr:`size_multiple`.
            code_only (bool): Stop after the bottleneck.
            return_attn_split (bool): Ask the bottleneck for its attention split.

        Returns:
            RestorerOutput: ``latents[0]`` is the feature entering the bottleneck (z_l).
        """
        return self.restore(x, code_only, return_attn_split)

    def pad_for_test(self, x):
        """FeMaSR's test-time mirror padding: each side n -> (n // wsz + 1)·wsz, wsz = (8 // scale)·8."""
        wsz = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (h // wsz + 1) * wsz, (w // wsz + 1) * wsz
        if ph - h > h or pw - w > w:
            raise ValueError(f'{type(self).__name__}.test: input of {h}x{w} LR pixels is too small; it needs at '
                             f'least {wsz // 2 + 1} pixels per side (padding is by mirroring)')
        x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :ph]
        return torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :pw]

    @torch.no_grad()
    def test(self, x):
        """Inference on any size: mirror-pad, run, crop to (h·scale, w·scale)."""
        h, w = x.shape[-2:]
        out = self.restore(self.pad_for_test(x)).image
        return out[..., :h * self.scale_factor, :w * self.scale_factor]

    @torch.no_grad()
    def test_tile(self, x, tile_size=240, tile_pad=16):
        """Tiled inference for large images: ``tile_size`` LR tiles with ``tile_pad`` context, each via :meth:`test`.

        Each output pixel comes from the tile that owns it (no blending); the last tile of a row/column is moved
        back to full size so that no sliver tile is too small to pad. FeMaSR's GroupNorm statistics and the
        bottleneck's attention are per tile, so tiles only approximate whole-image inference; an image that fits
        in one tile gives exactly :meth:`test`.
        """
        b, c, h, w = x.shape
        s = self.scale_factor
        out = x.new_zeros(b, 3, h * s, w * s)

        def starts(n):
            first = list(range(0, n, tile_size))
            return [min(p, max(n - tile_size, 0)) for p in first]

        for top in starts(h):
            for left in starts(w):
                bottom, right = min(top + tile_size, h), min(left + tile_size, w)
                t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
                t1, l1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
                tile = self.test(x[:, :, t0:t1, l0:l1])
                out[:, :, top * s:bottom * s, left * s:right * s] = tile[:, :, (top - t0) * s:(bottom - t0) * s,
                                                                         (left - l0) * s:(right - l0) * s]
        return out


@ARCH_REGISTRY.register()
class FeMaSRNet(SinCAFeMaSRNet):
    """The official FeMaSR network (nearest-code quantiser); released checkpoints (``params``) load strictly.

    Same keyword arguments as upstream (``codebook_params``, ``gt_resolution``, ``LQ_stage``, ``norm_type``,
    ``act_type``, ``use_quantize``, ``scale_factor``, ``use_semantic_loss``, ``use_residual``; other keys such as
    ``frozen_module_keywords`` are accepted). ``forward(x, gt_indices=None)`` returns ``(image, codebook_loss,
    semantic_loss, indices_list)``; ``test(x)`` pads by mirroring as upstream.

    ``channels`` / ``swin_opt`` (not upstream) shrink the network for CPU tests; the defaults are the release.
    ``use_semantic_loss`` (HQ pre-training only) is not supported; ``FeMaSR_HRP_model_g.pth`` loads without its
    ``conv_semantic.*`` / ``vgg_feat_extractor.*`` keys, which do not affect the forward. The rest of the
    restorer contract (``restore``, ``test``, targets) is :class:`SinCAFeMaSRNet`'s; to train, use that class with
    ``bottleneck: nearest`` (same keys).
    """

    official_forward = True

    def __init__(self, *, in_channel=3, codebook_params=None, gt_resolution=256, LQ_stage=False, norm_type='gn',
                 act_type='silu', use_quantize=True, scale_factor=4, use_semantic_loss=False, use_residual=True,
                 channels=None, swin_opt=None, **ignore_kwargs):
        if use_semantic_loss:
            raise ValueError('FeMaSRNet: use_semantic_loss (HQ pre-training with a VGG19 branch) is not supported; '
                             'the released HQ prior loads without it (drop conv_semantic.* / vgg_feat_extractor.*)')
        super().__init__('nearest', in_channel, codebook_params or [[32, 1024, 512]], gt_resolution, LQ_stage,
                         norm_type, act_type, scale_factor, use_residual, ignore_kwargs.get('frozen_module_keywords'),
                         channels, swin_opt)
        self.use_quantize = use_quantize

    def autoencoder_terms(self, output):
        image, codebook_loss, _, indices = output
        return image, codebook_loss, [i.reshape(-1) for i in indices]

    def transform(self, latents, return_attn_split=False):
        """The nearest codes; with ``use_quantize=False`` the decoder gets the latents unchanged (indices kept)."""
        outs = super().transform(latents, return_attn_split)
        return outs if self.use_quantize else [o._replace(feat=z) for o, z in zip(outs, latents)]

    def forward(self, x, gt_indices=None):
        """``(image, codebook_loss, semantic_loss, [indices (B, 1, h, w)])`` as upstream."""
        latents, context = self.encode(x)
        z, codebook = latents[0], self.codebooks[0]
        out = self.transform(latents)[0]
        indices = out.indices
        z_q = lookup_codes(indices, codebook)
        image = self.decode([out.feat], context)
        if self.LQ_stage and gt_indices is not None:
            target = lookup_codes(gt_indices[0].reshape(z.shape[0], *z.shape[2:]), codebook)
            codebook_loss = femasr_feature_loss(z, target)
        else:
            codebook_loss = (z_q - z.detach()).square().mean() + 0.25 * (z_q.detach() - z).square().mean()
        return image, codebook_loss, codebook_loss * 0, [indices[:, None]]
