"""DAEFR (dual associated encoders), state-dict compatible with the release (``DAEFR_model.ckpt``, 877 keys).

* :class:`SinCADAEFR` — DAEFR on the restorer contract: the LQ encoder and the association-trained HQ encoder
  both read the LQ image; their latents are fused by an LQ->HQ cross-attention; the bottleneck chosen in YAML
  (``index``: DAEFR's own transformer, CodeFormer's; ``sinca``, ``sa``, ``ca``, ``sinca_index``, ``nearest``)
  maps the fused latent into the fixed HQ codebook's space; ``post_quant_conv`` and the decoder render it. The
  HQ prior is part of the network (``Fixed_encoder`` + ``Fixed_quant_conv`` + ``Fixed_quantize``): the targets
  need no file.
* :class:`DAEFR` — the official network: ``SinCADAEFR`` with the ``index`` bottleneck, the official
  constructor, ``forward(lq, gt=None)`` and returns, and key names (the transformer at the top level).
* :class:`DAEFRAssociation` — stage 2: the HQ and LQ codebook autoencoders (:class:`VQVAEGAN`) trained together,
  their latents associated by a CLIP-style loss with a learnable temperature.

Key names and the data flow follow the official release (checked against golden cases in
``tests/archs/test_daefr_arch.py``); the code is ours.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks, lookup_codes
from basicsr_sinca.archs.index_transformer_arch import (CodeFormerIndexTransformer, map_official_index_keys,
                                                     official_index_key_names)
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer
from basicsr_sinca.archs.vqvaegan_arch import (VQVAEGAN, MultiHeadAttnBlock, TamingDecoder, TamingEncoder,
                                               TamingVectorQuantizer, check_image_input)
from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict

__all__ = ['DAEFRAutoencoders', 'DAEFRAssociation', 'SinCADAEFR', 'DAEFR', 'ddconfig_params']

# the released configuration (configs/DAEFR.yaml ddconfig.params)
DDCONFIG = dict(embed_dim=256, n_embed=1024, double_z=False, z_channels=256, resolution=512, in_channels=3, out_ch=3,
                ch=64, ch_mult=[1, 2, 2, 4, 4, 8], num_res_blocks=2, dropout=0.0, attn_resolutions=[16],
                enable_mid=True)
# keys of the official ddconfig that configure training only (accepted, no effect on the network)
_TRAINING_FLAGS = ('fix_decoder', 'fix_codebook', 'fix_encoder')


def ddconfig_params(ddconfig):
    """``{'target': ..., 'params': {...}}`` (the official YAML) or the params themselves -> a plain dict."""
    if ddconfig is None:
        return dict(DDCONFIG)
    params = dict(ddconfig.get('params', ddconfig)) if 'target' in ddconfig else dict(ddconfig)
    for key in _TRAINING_FLAGS:
        params.pop(key, None)
    unknown = sorted(set(params) - set(DDCONFIG) - {'head_size'})
    if unknown:
        raise ValueError(f'ddconfig: unknown keys {unknown}; expected some of {sorted(DDCONFIG)}')
    return dict(DDCONFIG, **params)


class DAEFRAutoencoders(nn.Module):
    """The official ``vqvae`` container (``VQVAEGANMERGE``): three encoders, one decoder, three codebooks.

    ``encoder``/``quant_conv``: LQ branch; ``HQ_encoder``/``HQ_quant_conv``: association-trained HQ encoder (fed
    the LQ image); ``Fixed_encoder``/``Fixed_quant_conv``/``Fixed_quantize``: the original HQ codebook model
    (targets and output codebook); ``HQ_quantize``/``LQ_quantize``: the association codebooks (kept for the
    checkpoint, unused by the forward); ``post_quant_conv``/``decoder`` from the HQ codebook model.
    """

    def __init__(self, embed_dim=256, n_embed=1024, double_z=False, z_channels=256, resolution=512, in_channels=3,
                 out_ch=3, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, dropout=0.0, attn_resolutions=(16, ),
                 enable_mid=True, head_size=1):
        super().__init__()
        enc = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, attn_resolutions=list(attn_resolutions),
                   dropout=dropout, resolution=resolution, z_channels=z_channels, enable_mid=enable_mid,
                   head_size=head_size)
        self.encoder = TamingEncoder(in_channels=in_channels, double_z=double_z, **enc)
        self.HQ_encoder = TamingEncoder(in_channels=in_channels, double_z=double_z, **enc)
        self.Fixed_encoder = TamingEncoder(in_channels=in_channels, double_z=double_z, **enc)
        self.decoder = TamingDecoder(out_ch=out_ch, **enc)
        self.Fixed_quantize = TamingVectorQuantizer(n_embed, embed_dim)
        self.HQ_quantize = TamingVectorQuantizer(n_embed, embed_dim)
        self.LQ_quantize = TamingVectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.HQ_quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.Fixed_quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)


def load_into(net, path, what, param_key='params'):
    """Strictly load ``path`` into ``net`` through the package's loader; one-line error naming the file."""
    state_dict, used = read_state_dict(path, param_key, ('params', 'params_ema', 'state_dict'))
    load_state_dict_report(net, state_dict, strict=True, source=f'{what} {path} [{used}]')


@ARCH_REGISTRY.register()
class DAEFRAssociation(nn.Module):
    """DAEFR stage 2 (association): ``vqvae`` (the HQ codebook autoencoder, fed the GT) and ``vqvae_LQ`` (the LQ
    one, fed the degraded image), each a :class:`VQVAEGAN`, and ``logit_scale`` (log of the CLIP temperature's
    inverse, initialised to log(1 / 0.07)). Images in [-1, 1].

    Args:
        ddconfig (dict | None): The autoencoders' configuration (default: the release).
        hq_codebook_path / lq_codebook_path (str | None): Stage-1 checkpoints (BasicSR or Lightning files) that
            initialise the two branches.
    """

    image_range = (-1.0, 1.0)

    def __init__(self, ddconfig=None, hq_codebook_path=None, lq_codebook_path=None):
        super().__init__()
        params = ddconfig_params(ddconfig)
        self.vqvae = VQVAEGAN(**params)
        self.vqvae_LQ = VQVAEGAN(**params)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for branch, path, what in ((self.vqvae, hq_codebook_path, 'HQ codebook'),
                                   (self.vqvae_LQ, lq_codebook_path, 'LQ codebook')):
            if path is not None:
                load_into(branch, path, what)

    def forward(self, gt, lq):
        """Both autoencoders: ``(hq_output, lq_output)``, each :class:`VQVAEGAN`'s forward tuple."""
        return self.vqvae(gt), self.vqvae_LQ(lq)

    def association_logits(self, hq_latent, lq_latent):
        """(B, B) similarities ``exp(logit_scale) · f_hq f_lq^T`` of the L2-normalised flattened latents (B, C, h, w)
        of the two branches (row i: HQ image i against every LQ image)."""
        f_hq = F.normalize(hq_latent.flatten(1), dim=1)
        f_lq = F.normalize(lq_latent.flatten(1), dim=1)
        return self.logit_scale.exp() * f_hq @ f_lq.t()


@ARCH_REGISTRY.register()
class SinCADAEFR(VQRestorer, HQPrior):
    """DAEFR whose code prediction is a configurable bottleneck on the fused LQ/HQ latent. Images in [-1, 1].

    Args:
        bottleneck (dict | str | list): ``{'type': 'index' | 'sinca' | 'sa' | 'ca' | 'sinca_index' | 'nearest',
            ...}``. Default: SinCA with the paper settings (9 layers, 8 heads).
        ddconfig (dict | None): The official autoencoder configuration (``{'target': ..., 'params': {...}}`` or
            the params); default: the release (512 px, 16x16x256 latent, 1024 codes).
        cross_attention_heads (int): Heads of the LQ->HQ fusion. Default: 8.
        fix_modules (list[str]): Submodules (dotted names, e.g. ``vqvae.decoder``) whose parameters get
            ``requires_grad=False``. Default: the parts DAEFR's final stage does not optimise (decoder,
            post-quant conv, every codebook, the fixed encoder).
        hq_codebook_path (str | None): The HQ codebook (stage 1, a :class:`VQVAEGAN` file): initialises the fixed
            encoder, quant conv and codebook, the decoder and the post-quant conv, as DAEFR's final stage does.
        association_path (str | None): The association checkpoint (stage 2, :class:`DAEFRAssociation`): its HQ
            branch initialises ``HQ_encoder`` / ``HQ_quant_conv`` / ``HQ_quantize``, its LQ branch ``encoder`` /
            ``quant_conv`` / ``LQ_quantize``.
    """

    image_range = (-1.0, 1.0)
    FROZEN_IN_FINAL_STAGE = ('vqvae.decoder', 'vqvae.post_quant_conv', 'vqvae.Fixed_quantize', 'vqvae.HQ_quantize',
                             'vqvae.LQ_quantize', 'vqvae.Fixed_encoder', 'vqvae.Fixed_quant_conv')

    def __init__(self, bottleneck=None, ddconfig=None, cross_attention_heads=8, fix_modules=FROZEN_IN_FINAL_STAGE,
                 hq_codebook_path=None, association_path=None):
        super().__init__()
        params = ddconfig_params(ddconfig)
        self.vqvae = DAEFRAutoencoders(**params)
        if hq_codebook_path is not None:
            self.init_from_codebook(hq_codebook_path, params)
        if association_path is not None:
            self.init_from_association(association_path, params)
        self.cross_attention = MultiHeadAttnBlock(params['embed_dim'], cross_attention_heads)
        self.scale_factor = 2**(len(params['ch_mult']) - 1)
        self.img_size = params['resolution']  # the aligned face size
        side = params['resolution'] // self.scale_factor
        self.bottleneck = build_bottlenecks(bottleneck, [(params['n_embed'], params['embed_dim'])],
                                            [(side, side)])[0]
        self.register_load_state_dict_pre_hook(self._fill_vqvae_prefix)
        self.register_load_state_dict_pre_hook(self._map_official_index_keys)
        for name in fix_modules or ():
            for p in self.get_submodule(name).parameters():
                p.requires_grad = False

    def init_from_codebook(self, path, params):
        """Fixed encoder / quant conv / codebook, decoder and post-quant conv from the HQ codebook file."""
        hq = VQVAEGAN(**params)
        load_into(hq, path, 'HQ codebook')
        v = self.vqvae
        for ours, theirs in ((v.Fixed_encoder, hq.encoder), (v.Fixed_quant_conv, hq.quant_conv),
                             (v.Fixed_quantize, hq.quantize), (v.decoder, hq.decoder),
                             (v.post_quant_conv, hq.post_quant_conv)):
            ours.load_state_dict(theirs.state_dict())

    def init_from_association(self, path, params):
        """The HQ and LQ branches' encoders, quant convs and codebooks from the association file."""
        assoc = DAEFRAssociation(params)
        load_into(assoc, path, 'association checkpoint')
        v, hq, lq = self.vqvae, assoc.vqvae, assoc.vqvae_LQ
        for ours, theirs in ((v.HQ_encoder, hq.encoder), (v.HQ_quant_conv, hq.quant_conv), (v.HQ_quantize, hq.quantize),
                             (v.encoder, lq.encoder), (v.quant_conv, lq.quant_conv), (v.LQ_quantize, lq.quantize)):
            ours.load_state_dict(theirs.state_dict())

    @staticmethod
    def _fill_vqvae_prefix(module, state_dict, prefix, *args):
        """As DAEFR's test loader: an autoencoder key missing under ``vqvae.`` is taken from the file's same key
        without the prefix."""
        own = {f'{prefix}vqvae.{k}' for k in module.vqvae.state_dict()}
        for key in [k for k in state_dict if k.startswith(prefix) and k not in own]:
            full = f'{prefix}vqvae.{key[len(prefix):]}'
            if full in own and full not in state_dict:
                state_dict[full] = state_dict.pop(key)

    @staticmethod
    def _map_official_index_keys(module, state_dict, prefix, *args):
        """The released file stores the index transformer at the top level; ours lives in ``bottleneck``."""
        if isinstance(module.bottleneck, CodeFormerIndexTransformer):
            map_official_index_keys(state_dict, prefix, 'bottleneck')

    def check_input(self, x):
        check_image_input(self, x, self.scale_factor, channels=3)

    @property
    def codebooks(self):
        """[the fixed HQ codebook (M, C)]: the targets' and the output's codebook."""
        return [self.vqvae.Fixed_quantize.embedding.weight]

    @property
    def bottlenecks(self):
        return [self.bottleneck]

    def prior_config(self):
        return None  # the fixed HQ encoder and codebook are part of the network

    @property
    def decoder_last_layer(self):
        return self.vqvae.decoder.conv_out.weight

    def encode_hq(self, gt):
        """[Fixed_quant_conv(Fixed_encoder(gt))]: the latent whose nearest fixed codes are the targets."""
        self.check_input(gt)
        return [self.vqvae.Fixed_quant_conv(self.vqvae.Fixed_encoder(gt)['out'])]

    def encode(self, lq):
        """(B, 3, H, W) -> ([fused (B, C, h, w)], context: ``z_l`` / ``z_h`` the LQ / HQ-branch latents, ``hs`` the
        LQ encoder's feature dict)."""
        self.check_input(lq)
        hs = self.vqvae.encoder(lq)
        z_l = self.vqvae.quant_conv(hs['out'])
        z_h = self.vqvae.HQ_quant_conv(self.vqvae.HQ_encoder(lq)['out'])
        return [self.cross_attention(z_h, z_l)], {'z_l': z_l, 'z_h': z_h, 'hs': hs}

    def decode(self, feats, context=None):
        """[feature in the fixed codebook's space] -> image (B, 3, H, W): ``post_quant_conv`` then the decoder."""
        return self.vqvae.decoder(self.vqvae.post_quant_conv(feats[0]))


@ARCH_REGISTRY.register()
class DAEFR(SinCADAEFR):
    """The official DAEFR network (``DAEFR_model.ckpt`` loads strictly once converted; same forward and returns).

    Accepts the official ``model.params`` of ``configs/DAEFR.yaml``: ``ddconfig`` builds the network;
    ``lossconfig``, ``image_key``, ``special_params_lr_scale``, ``comp_params_lr_scale`` and ``schedule_step``
    configure upstream training only and are accepted without effect; ``ckpt_path_HQ`` / ``ckpt_path_LQ`` must be
    None (load weights with ``path.pretrain_network_g`` and ``scripts/convert_lightning_ckpt.py``).

    ``forward(lq, gt=None)`` returns ``(dec, BCE_loss, L2_loss, z_info, z_hs, z_l, quant_z, codebook)`` as upstream;
    targets come from ``gt`` (else from the LQ branch's nearest codes). To train, use :class:`SinCADAEFR` with
    ``bottleneck: {type: index}`` (the same keys).
    """

    official_forward = True

    def __init__(self, ddconfig=None, lossconfig=None, image_key='lq', ckpt_path_HQ=None, ckpt_path_LQ=None,
                 special_params_lr_scale=1, comp_params_lr_scale=10, schedule_step=None, n_layers=9, n_head=8,
                 dim_embd=512):
        if ckpt_path_HQ is not None or ckpt_path_LQ is not None:
            raise ValueError('DAEFR: ckpt_path_HQ / ckpt_path_LQ (Lightning initialisation) are not read by the arch; '
                             'convert the checkpoint with scripts/convert_lightning_ckpt.py and load it with '
                             'path.pretrain_network_g')
        index = {'type': 'index', 'dim_embd': dim_embd, 'n_head': n_head, 'n_layers': n_layers}
        super().__init__(index, ddconfig, fix_modules=())
        self.register_state_dict_post_hook(official_index_key_names)

    def forward(self, lq, gt=None):
        latents, context = self.encode(lq)
        fused, z_l = latents[0], context['z_l']
        codebook = self.codebooks[0]
        quant_z, _, z_info = self.vqvae.Fixed_quantize(z_l)
        if gt is None:
            target_indices, target_feat = z_info[2].reshape(z_l.shape[0], -1), quant_z
        else:
            (target, ) = self.prior_targets(gt)
            target_indices, target_feat = target.indices.flatten(1), target.feat
        out = self.bottleneck(fused, codebook)
        bce_loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), target_indices.reshape(-1))
        l2_loss = F.mse_loss(fused, target_feat)
        quant = lookup_codes(out.indices, codebook)
        dec = self.decode([fused + (quant - fused)])
        return dec, bce_loss, l2_loss, z_info, context['hs'], z_l, quant_z, codebook
