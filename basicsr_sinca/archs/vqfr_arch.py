"""VQFR v2, state-dict compatible with the release: the VQGAN v2 prior (``VQ_Codebook_FFHQ512_v2.pth``) and the
restoration network (``VQFR_v2.pth``) whose parallel main branch warps the texture decoder's features toward the
degraded input with deformable convolutions.

* :class:`VQGANv2` — the codebook prior (an :class:`HQPrior`): encoder -> nearest code -> texture decoder.
* :class:`SinCAVQFRv2` — VQFR v2 on the restorer contract: the code selection (``feat2index`` + argmax, or the
  nearest lookup) is the bottleneck chosen in YAML (``feat2index``: VQFR's own head; ``nearest``; ``sinca``,
  ``sa``, ``ca``, ``sinca_index``); the texture decoder runs without gradient (as upstream) and the main branch
  blends its warped features in with ``fidelity_ratio``.
* :class:`VQFRv2` — the official network: the official constructor, ``forward(x_lq, fidelity_ratio=1.0)`` returning
  ``{'enc_feat', 'quant_logit', 'texture_dec', 'main_dec'}`` and key names.

Deformable convolution is BasicSR's ``DCNv2Pack`` (``torchvision.ops.deform_conv2d``: pure PyTorch, CPU and GPU,
no compiled extension); the encoder/decoder blocks are the VQGAN ones of ``codeformer_arch.py`` and
``vqvaegan_arch.py``. Images in [-1, 1]. Key names and the data flow follow the official release (checked against
golden cases in ``tests/archs/test_vqfr_arch.py``); the code is ours.
"""
import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import DCNv2Pack
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import (Bottleneck, BottleneckOutput, build_bottlenecks, lookup_codes,
                                                 nearest_code_indices)
from basicsr_sinca.archs.codeformer_arch import VQGANAttnBlock, VQGANDownsample, VQGANUpsample, group_norm
from basicsr_sinca.archs.index_transformer_arch import map_official_index_keys, official_index_key_names
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer
from basicsr_sinca.archs.vqvaegan_arch import TamingResnetBlock, check_image_input
from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY

__all__ = ['VQFREncoder', 'VQFRTextureDecoder', 'BilinearResizeConv', 'TextureWarpingModule', 'VQFRMainBranch',
           'Feat2IndexBottleneck', 'L2Codebook', 'VQGANv2', 'SinCAVQFRv2', 'VQFRv2', 'probed_conv']


def level_channels(base_channels, channel_multipliers):
    """Channels of the levels 512/2^i (Level_1 ... Level_32 for six multipliers)."""
    return [base_channels * m for m in channel_multipliers]


def resnet_block(in_channels, out_channels):
    """VQFR v2's ResnetBlock: the taming block with its 1x1 shortcut named ``residual_func``."""
    return TamingResnetBlock(in_channels, out_channels, shortcut='residual_func')


def conv_out(in_channels, out_channels):
    """[GroupNorm, SiLU, 3x3 conv] (keys ``.0``, ``.2``)."""
    return nn.Sequential(group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, 1, 1))


class VQFREncoder(nn.Module):
    """``conv_in``; ``blocks.i`` per level (``[Downsample,] ResnetBlock, ResnetBlock`` with attention after each
    block at the lowest level); ``mid_blocks`` (ResnetBlock, Attn, ResnetBlock); ``conv_out`` to ``code_dim``."""

    def __init__(self, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), num_blocks=2, use_attention=True,
                 code_dim=256):
        super().__init__()
        chans = level_channels(base_channels, channel_multipliers)
        self.conv_in = nn.Conv2d(3, chans[0], 3, 1, 1)
        self.blocks = nn.ModuleList()
        for level, c in enumerate(chans):
            prev = chans[max(level - 1, 0)]
            layers = [] if level == 0 else [VQGANDownsample(prev)]
            for i in range(num_blocks):
                layers.append(resnet_block(prev if i == 0 else c, c))
                if use_attention and level == len(chans) - 1:
                    layers.append(VQGANAttnBlock(c))
            self.blocks.append(nn.Sequential(*layers))
        self.mid_blocks = nn.Sequential(resnet_block(chans[-1], chans[-1]), VQGANAttnBlock(chans[-1]),
                                        resnet_block(chans[-1], chans[-1]))
        self.conv_out = conv_out(chans[-1], code_dim)

    def forward(self, x):
        """(B, 3, H, W) -> (B, code_dim, H/32, W/32) for six levels."""
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(self.mid_blocks(x))


class VQFRTextureDecoder(nn.Module):
    """``conv_in``; ``mid_blocks``; ``blocks.0`` at the latent level (ResnetBlock, Attn) x num_blocks;
    ``blocks.j`` (Upsample, ResnetBlock x num_blocks); ``conv_out`` to RGB.

    :meth:`forward` returns the texture feature of every level, ``{'Level_32': ..., ..., 'Level_1': ...}`` (level k
    at 1/k of the image size); ``conv_out`` maps the ``Level_1`` feature to the image.
    """

    def __init__(self, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), num_blocks=2, use_attention=True,
                 code_dim=256):
        super().__init__()
        chans = level_channels(base_channels, channel_multipliers)[::-1]  # coarse to fine
        self.levels = [f'Level_{2**(len(chans) - 1 - j)}' for j in range(len(chans))]
        self.conv_in = nn.Conv2d(code_dim, chans[0], 3, 1, 1)
        self.blocks = nn.ModuleList()
        for j, c in enumerate(chans):
            prev = chans[max(j - 1, 0)]
            layers = [] if j == 0 else [VQGANUpsample(prev)]
            for i in range(num_blocks):
                layers.append(resnet_block(prev if i == 0 else c, c))
                if use_attention and j == 0:
                    layers.append(VQGANAttnBlock(c))
            self.blocks.append(nn.Sequential(*layers))
        self.mid_blocks = nn.Sequential(resnet_block(chans[0], chans[0]), VQGANAttnBlock(chans[0]),
                                        resnet_block(chans[0], chans[0]))
        self.conv_out = conv_out(chans[-1], 3)

    def forward(self, z):
        x = self.mid_blocks(self.conv_in(z))
        feats = {}
        for level, block in zip(self.levels, self.blocks):
            x = feats[level] = block(x)
        return feats


class BilinearResizeConv(nn.Module):
    """VQFR v1's resampling: a bilinear resize by ``scale_factor`` (align_corners False) and a 3x3 ``conv``, the conv
    first when ``conv_first`` (v1's upsampling) or last (its downsampling)."""

    def __init__(self, in_channels, out_channels, scale_factor, conv_first=False):
        super().__init__()
        self.scale_factor, self.conv_first = scale_factor, conv_first
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        if self.conv_first:
            x = self.conv(x)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode='bilinear', align_corners=False)
        return x if self.conv_first else self.conv(x)


class TextureWarpingModule(nn.Module):
    """Warps a texture feature toward the LQ condition with a modulated deformable 3x3 conv (``dcn``, 4 offset groups).

    The condition is the 32-channel LQ feature brought to the texture's size: by a learned ``downsample`` (bilinear
    1/k + 3x3 conv; VQFR v1, ``cond_downscale_rate`` k > 1) or a plain bilinear resize (v2). Offset feature
    ``o = offset_conv1([cond; texture])`` then ``offset_conv2(o)`` (coarsest level) or
    ``offset_conv2([o; 2 * up2(o_prev)])``; returns ``(warped texture, o)``.
    """

    def __init__(self, channels, cond_channels, prev_offset_channels=0, deformable_groups=4,
                 cond_downscale_rate=None):
        super().__init__()
        if cond_downscale_rate is not None:  # v1 (key-less identity at Level_1)
            self.downsample = BilinearResizeConv(cond_channels, cond_channels, 1 / cond_downscale_rate) \
                if cond_downscale_rate > 1 else nn.Identity()
        self.offset_conv1 = nn.Sequential(
            nn.Conv2d(channels + cond_channels, channels, 1), group_norm(channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 7, 1, 3, groups=channels), group_norm(channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 1))
        self.offset_conv2 = nn.Sequential(nn.Conv2d(channels + prev_offset_channels, channels, 3, 1, 1),
                                          group_norm(channels), nn.SiLU())
        self.dcn = DCNv2Pack(channels, channels, 3, padding=1, deformable_groups=deformable_groups)

    def forward(self, inpfeat, texture, previous_offset=None):
        if hasattr(self, 'downsample'):
            cond = self.downsample(inpfeat)
        elif inpfeat.shape[-2:] != texture.shape[-2:]:
            cond = F.interpolate(inpfeat, size=texture.shape[-2:], mode='bilinear', align_corners=False)
        else:
            cond = inpfeat
        offset = self.offset_conv1(torch.cat([cond, texture], dim=1))
        if previous_offset is not None:
            up = F.interpolate(previous_offset, scale_factor=2, mode='bilinear', align_corners=False)
            offset = torch.cat([offset, 2 * up], dim=1)
        offset = self.offset_conv2(offset)
        return self.dcn(texture, offset), offset


class VQFRMainBranch(nn.Module):
    """VQFR's parallel decoder: per level the texture feature warped toward the LQ feature (``align_func_dict``),
    fused coarse to fine: ``x = decoder_dict(cat[pre_upsample_dict(x), warped])``.

    Args:
        channels (list[int]): Level channels, coarse to fine (Level_32 first).
        cond_channels (int): Channels of the LQ feature. Default: 32.
        deformable_groups (int): Offset groups of the deformable convs. Default: 4.
        version (int): 2: v2's main branch (nearest x2 + conv upsampling, ``residual_func`` shortcuts, resized
            condition), :meth:`forward` returns ``texture_Level_1 + fidelity_ratio * x``. 1: v1's main decoder
            (conv + bilinear x2, ``shortcut_conv``, learned condition downsampling); see ``VQFRv1MainDecoder``.
    """

    def __init__(self, channels, cond_channels=32, deformable_groups=4, version=2):
        super().__init__()
        self.levels = [f'Level_{2**(len(channels) - 1 - j)}' for j in range(len(channels))]
        shortcut = {1: 'shortcut_conv', 2: 'residual_func'}[version]
        self.decoder_dict = nn.ModuleDict()
        self.pre_upsample_dict = nn.ModuleDict()
        self.align_func_dict = nn.ModuleDict()
        for j, (level, c) in enumerate(zip(self.levels, channels)):
            if j:
                self.decoder_dict[level] = TamingResnetBlock(2 * c, c, shortcut=shortcut)
                self.pre_upsample_dict[level] = BilinearResizeConv(channels[j - 1], c, 2, conv_first=True) \
                    if version == 1 else nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'),
                                                       nn.Conv2d(channels[j - 1], c, 3, 1, 1))
        for j, (level, c) in enumerate(zip(self.levels, channels)):
            rate = 2**(len(channels) - 1 - j) if version == 1 else None
            self.align_func_dict[level] = TextureWarpingModule(c, cond_channels, channels[j - 1] if j else 0,
                                                               deformable_groups, rate)

    def fuse(self, inpfeat, textures):
        """LQ feature (B, cond, H, W) and the texture features ``{level: (B, c, H/k, W/k)}`` -> (B, c_1, H, W)."""
        x, offset = None, None
        for level in self.levels:
            warped, offset = self.align_func_dict[level](inpfeat, textures[level], offset)
            x = warped if x is None else self.decoder_dict[level](
                torch.cat([self.pre_upsample_dict[level](x), warped], dim=1))
        return x

    def forward(self, inpfeat, textures, fidelity_ratio=1.0):
        """v2: the main feature ``texture_Level_1 + fidelity_ratio * fuse(...)`` (B, c_1, H, W)."""
        return textures[self.levels[-1]] + fidelity_ratio * self.fuse(inpfeat, textures)


def probed_conv(probes, key, conv, x):
    """``conv(x)``, keeping in ``probes[key]`` the weight tensor autograd saw.

    VQFR judges images whose last conv is frozen (the shared ``decoder.conv_out``) with VQGAN's adaptive GAN weight,
    which needs d loss / d weight: for a frozen conv under autograd the weight is replaced by a stand-in leaf of the
    same values that carries that gradient and is never optimised.
    """
    weight = conv.weight
    if torch.is_grad_enabled() and not weight.requires_grad:
        weight = weight.detach().requires_grad_()
    probes[key] = weight
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding)


class Feat2IndexBottleneck(Bottleneck):
    """Bottleneck ``feat2index``: VQFR v2's code prediction, LayerNorm + Linear(C -> M) on each token, top-1 rows.

    Keys ``feat2index.0`` / ``.1`` (the release stores them at the network's top level).

    Args:
        dim (int): Channels C. codebook_size (int): Items M.
    """

    predicts_logits = True
    selects_codes = True

    def __init__(self, dim, codebook_size):
        super().__init__(dim, codebook_size)
        self.feat2index = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codebook_size))

    def forward(self, lq_feat, codebook, return_attn_split=False):
        self.check_inputs(lq_feat, codebook, return_attn_split)
        b, _, h, w = lq_feat.shape
        logits = self.feat2index(lq_feat.flatten(2).transpose(1, 2))
        indices = logits.argmax(dim=-1).reshape(b, h, w)
        return BottleneckOutput(lookup_codes(indices, codebook.detach()), logits=logits, indices=indices)


@BOTTLENECK_REGISTRY.register()
def feat2index(dim, codebook_size):
    """VQFR v2's own index head (official names; loads from ``VQFR_v2.pth``)."""
    return Feat2IndexBottleneck(dim, codebook_size)


class L2Codebook(nn.Module):
    """Holds VQFR v2's codebook as ``embedding`` (key ``quantizer.embedding.weight``)."""

    def __init__(self, num_code=1024, code_dim=256):
        super().__init__()
        self.embedding = nn.Embedding(num_code, code_dim)


def quantizer_config(quantizer_opt):
    """``(num_code, code_dim, spatial_size)`` of VQFR v2's ``quantizer_opt`` (the release: 1024, 256, [16, 16])."""
    opt = dict(quantizer_opt or {})
    unknown = set(opt) - {'type', 'num_code', 'code_dim', 'spatial_size'}
    if unknown:
        raise ValueError(f'quantizer_opt: unknown keys {sorted(unknown)} (expected type, num_code, code_dim, '
                         'spatial_size)')
    if opt.get('type', 'L2VectorQuantizer') != 'L2VectorQuantizer':
        raise ValueError(f"quantizer_opt.type: {opt['type']!r} is not VQFR v2's (L2VectorQuantizer)")
    return int(opt.get('num_code', 1024)), int(opt.get('code_dim', 256)), list(opt.get('spatial_size', [16, 16]))


@ARCH_REGISTRY.register()
class VQGANv2(nn.Module, HQPrior):
    """VQFR v2's codebook prior (``VQ_Codebook_FFHQ512_v2.pth``, 329 keys). Images in [-1, 1], sides multiples of 32.

    Official arguments: base_channels (64), channel_multipliers ([1, 2, 2, 4, 4, 8]), num_enc_blocks (2),
    use_enc_attention (True), num_dec_blocks (2), use_dec_attention (True), code_dim (256), quantizer_opt
    (``{'type': 'L2VectorQuantizer', 'num_code': 1024, 'code_dim': 256, 'spatial_size': [16, 16]}``).
    ``forward(x, return_keys=('dec',))`` returns ``({'quant_feat', 'quant_index'[, 'dec']}, emb_loss)``.
    """

    image_range = (-1.0, 1.0)

    def __init__(self, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), num_enc_blocks=2,
                 use_enc_attention=True, num_dec_blocks=2, use_dec_attention=True, code_dim=256, quantizer_opt=None):
        super().__init__()
        num_code, quant_dim, _ = quantizer_config(quantizer_opt)
        self.config = dict(base_channels=base_channels, channel_multipliers=list(channel_multipliers),
                           num_enc_blocks=num_enc_blocks, use_enc_attention=use_enc_attention,
                           num_dec_blocks=num_dec_blocks, use_dec_attention=use_dec_attention, code_dim=code_dim,
                           quantizer_opt=dict(quantizer_opt or {}))
        self.scale_factor = 2**(len(channel_multipliers) - 1)
        self.encoder = VQFREncoder(base_channels, channel_multipliers, num_enc_blocks, use_enc_attention, code_dim)
        self.decoder = VQFRTextureDecoder(base_channels, channel_multipliers, num_dec_blocks, use_dec_attention,
                                          code_dim)
        self.quantizer = L2Codebook(num_code, quant_dim)

    @property
    def codebooks(self):
        return [self.quantizer.embedding.weight]

    @property
    def decoder_last_layer(self):
        return self.decoder.conv_out[-1].weight

    def encode_hq(self, gt):
        check_image_input(self, gt, self.scale_factor)
        return [self.encoder(gt)]

    def quantize(self, z):
        """Nearest codes: (straight-through feature, loss 1.25·MSE in value, indices (B, H·W))."""
        codebook = self.quantizer.embedding.weight
        indices, _ = nearest_code_indices(z, codebook)
        z_q = lookup_codes(indices, codebook)
        loss = torch.mean((z_q.detach() - z)**2) + 0.25 * torch.mean((z_q - z.detach())**2)
        return z + (z_q - z).detach(), loss, indices.flatten(1)

    def forward(self, x, return_keys=('dec', )):
        z = self.encode_hq(x)[0]
        quant_feat, emb_loss, quant_index = self.quantize(z)
        res = {'quant_feat': quant_feat, 'quant_index': quant_index}
        if 'dec' in return_keys:
            res['dec'] = self.decoder.conv_out(self.decoder(quant_feat)['Level_1'])
        return res, emb_loss

    def autoencoder_terms(self, output):
        res, emb_loss = output
        return res['dec'], emb_loss, [res['quant_index'].reshape(-1)]


@ARCH_REGISTRY.register()
class SinCAVQFRv2(VQRestorer):
    """VQFR v2 whose code selection is a configurable bottleneck (one codebook).

    encoder -> bottleneck (``quantizer.embedding``) -> texture decoder (no gradient, as upstream) -> per-level texture
    features -> main branch (warped toward ``inpfeat_extraction(x_lq)``) -> ``decoder.conv_out``:
    ``main_dec = conv_out(texture_Level_1 + fidelity_ratio · main branch)``. The texture image
    ``conv_out(texture_Level_1)`` is left in the context (``texture_dec``).

    Args:
        bottleneck (dict | str | list): ``{'type': 'feat2index' | 'nearest' | 'sinca' | 'sa' | 'ca' | 'sinca_index',
            ...}``. Default: SinCA with the paper settings.
        base_channels, channel_multipliers, num_enc_blocks, use_enc_attention, num_dec_blocks, use_dec_attention,
            code_dim, inpfeat_dim, align_opt (``cond_channels``, ``deformable_groups``), quantizer_opt: the official
            arguments (defaults: the release).
        fix_modules (list[str]): Frozen submodules. Default: the codebook and the texture decoder (VQFR v2 trains
            neither).
    """

    image_range = (-1.0, 1.0)

    def __init__(self, bottleneck=None, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), num_enc_blocks=2,
                 use_enc_attention=True, num_dec_blocks=2, use_dec_attention=True, code_dim=256, inpfeat_dim=32,
                 align_opt=None, quantizer_opt=None, fix_modules=('quantizer', 'decoder')):
        super().__init__()
        align = dict({'cond_channels': 32, 'deformable_groups': 4}, **(align_opt or {}))
        num_code, quant_dim, spatial_size = quantizer_config(quantizer_opt)
        self.vqgan_config = dict(base_channels=base_channels, channel_multipliers=list(channel_multipliers),
                                 num_enc_blocks=num_enc_blocks, use_enc_attention=use_enc_attention,
                                 num_dec_blocks=num_dec_blocks, use_dec_attention=use_dec_attention,
                                 code_dim=code_dim, quantizer_opt=dict(quantizer_opt or {}))
        self.scale_factor = 2**(len(channel_multipliers) - 1)
        # the face size the model works at: the release's latent grid spatial_size (16 x 16) times 32
        self.img_size = spatial_size[0] * self.scale_factor
        self.encoder = VQFREncoder(base_channels, channel_multipliers, num_enc_blocks, use_enc_attention, code_dim)
        self.bottleneck = build_bottlenecks(bottleneck, [(num_code, quant_dim)], [tuple(spatial_size)])[0]
        self.decoder = VQFRTextureDecoder(base_channels, channel_multipliers, num_dec_blocks, use_dec_attention,
                                          code_dim)
        self.main_branch = VQFRMainBranch(level_channels(base_channels, channel_multipliers)[::-1],
                                          align['cond_channels'], align['deformable_groups'])
        self.inpfeat_extraction = nn.Conv2d(3, inpfeat_dim, 3, 1, 1)
        self.quantizer = L2Codebook(num_code, quant_dim)
        self.weight_probes = {}
        self.register_load_state_dict_pre_hook(self._map_official_head_keys)
        for name in fix_modules or ():
            for p in self.get_submodule(name).parameters():
                p.requires_grad = False

    @staticmethod
    def _map_official_head_keys(module, state_dict, prefix, *args):
        """``VQFR_v2.pth`` stores ``feat2index`` at the top level; ours lives in ``bottleneck``."""
        if isinstance(module.bottleneck, Feat2IndexBottleneck):
            map_official_index_keys(state_dict, prefix, 'bottleneck', keys=('feat2index.', ))

    @property
    def codebooks(self):
        return [self.quantizer.embedding.weight]

    @property
    def bottlenecks(self):
        return [self.bottleneck]

    @property
    def decoder_last_layer(self):
        """The weight of ``decoder.conv_out``'s conv as the last forward used it (see :func:`probed_conv`)."""
        return self.weight_probes.get('image', self.decoder.conv_out[-1].weight)

    def prior_config(self):
        return dict(type='VQGANv2', **self.vqgan_config)

    def encode(self, x_lq):
        """(B, 3, H, W) -> ([enc_feat (B, C, H/32, W/32)], {'inpfeat': the 32-channel LQ feature})."""
        check_image_input(self, x_lq, self.scale_factor, channels=3)
        return [self.encoder(x_lq)], {'inpfeat': self.inpfeat_extraction(x_lq)}

    def decode(self, feats, context, fidelity_ratio=1.0):
        """Texture decoder (no gradient) on ``feats[0]``, the main branch, ``decoder.conv_out`` -> main_dec; the
        texture image goes to ``context['texture_dec']``."""
        with torch.no_grad():
            textures = self.decoder(feats[0])
            context['texture_dec'] = self.decoder.conv_out(textures['Level_1'])
        main = self.main_branch(context['inpfeat'], textures, fidelity_ratio)
        return probed_conv(self.weight_probes, 'image', self.decoder.conv_out[-1], self.decoder.conv_out[:-1](main))

    def forward(self, x_lq, fidelity_ratio=1.0, code_only=False, return_attn_split=False):
        return self.restore(x_lq, code_only, return_attn_split, fidelity_ratio=fidelity_ratio)


@ARCH_REGISTRY.register()
class VQFRv2(SinCAVQFRv2):
    """The official VQFR v2 (``VQFR_v2.pth``, 503 keys; loads strictly).

    Official arguments; ``code_selection_mode`` ``'Predict'`` (the release: ``feat2index``) or ``'Nearest'``.
    ``forward(x_lq, fidelity_ratio=1.0)`` returns ``{'enc_feat', 'quant_logit', 'texture_dec', 'main_dec'}``
    (``quant_logit`` None in ``'Nearest'`` mode). To train, use :class:`SinCAVQFRv2` with ``bottleneck:
    feat2index`` (the same keys).
    """

    official_forward = True

    def __init__(self, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), num_enc_blocks=2,
                 use_enc_attention=True, num_dec_blocks=2, use_dec_attention=True, code_dim=256, inpfeat_dim=32,
                 align_opt=None, code_selection_mode='Predict', quantizer_opt=None):
        modes = {'Predict': 'feat2index', 'Nearest': 'nearest'}
        if code_selection_mode not in modes:
            raise ValueError(f'VQFRv2: code_selection_mode must be one of {sorted(modes)}, got {code_selection_mode!r}')
        super().__init__(modes[code_selection_mode], base_channels, channel_multipliers, num_enc_blocks,
                         use_enc_attention, num_dec_blocks, use_dec_attention, code_dim, inpfeat_dim, align_opt,
                         quantizer_opt, fix_modules=())
        self.register_state_dict_post_hook(official_index_key_names)

    def forward(self, x_lq, fidelity_ratio=1.0):
        out = self.restore(x_lq, fidelity_ratio=fidelity_ratio)
        return {'enc_feat': out.latents[0], 'quant_logit': out.bottlenecks[0].logits,
                'texture_dec': out.context['texture_dec'], 'main_dec': out.image}
