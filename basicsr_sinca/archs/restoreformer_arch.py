"""RestoreFormer, state-dict compatible with the release: the taming-style autoencoder whose decoder cross-attends
(multi-head, MHCA) to the degraded image's encoder features.

* :class:`SinCARestoreFormer` — RestoreFormer on the restorer contract: the nearest lookup of ``quant_conv(out)``
  becomes the bottleneck chosen in YAML; ``post_quant_conv`` and the MHCA decoder are unchanged and still read
  the LQ encoder's features (``block_5_atten``, ``mid_atten``). The HQ dictionary (a ``VQVAEGAN`` with
  ``head_size: 8``) is its prior. What trains is an option (``fix_modules``); the default keeps the decoder's
  cross-attention inputs as trained (see the class).
* :class:`VQVAEGANMultiHeadTransformer` — the official network: the official constructor, ``forward(x)`` ->
  ``(dec, emb_loss, info, hs)`` and key names (405 keys, those of the HQ dictionary).

The blocks are the taming ones of ``vqvaegan_arch.py`` (shared with DAEFR). Key names and the data flow follow
the official release (checked against golden cases in ``tests/archs/test_restoreformer_arch.py``); the code is ours.
"""
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks
from basicsr_sinca.archs.restorer_arch import VQRestorer
from basicsr_sinca.archs.vqvaegan_arch import build_taming_autoencoder, check_image_input, strip_lightning_prefix

__all__ = ['SinCARestoreFormer', 'VQVAEGANMultiHeadTransformer']


@ARCH_REGISTRY.register()
class SinCARestoreFormer(VQRestorer):
    """RestoreFormer whose nearest lookup is a configurable bottleneck. Images in [-1, 1], sides multiples of
    2^(len(ch_mult) - 1) (32 for the release).

    encoder (feature dict ``hs``) -> ``quant_conv`` -> bottleneck (codebook ``quantize.embedding``) ->
    ``post_quant_conv`` -> decoder, whose ``mid.attn_1`` / top-level attention blocks take their queries from
    ``hs['mid_atten']`` / ``hs['block_5_atten']``.

    Args:
        bottleneck (dict | str | list): ``{'type': 'sinca' | 'sa' | 'ca' | 'sinca_index' | 'nearest', ...}``.
            Default: SinCA with the paper settings (9 layers, 8 heads).
        embed_dim, n_embed, double_z, z_channels, resolution, in_channels, out_ch, ch, ch_mult, num_res_blocks,
            dropout, attn_resolutions, enable_mid, head_size: the official ``ddconfig`` (defaults: the release,
            head_size 8).
        fix_modules (list[str]): Submodules (dotted names) frozen. Default (:attr:`FROZEN_BEFORE_LATENT`): the
            codebook, ``post_quant_conv``, the decoder and the encoder up to its mid block — so the features the
            decoder's MHCA reads stay exactly those it was trained with, and only the encoder's last layers
            (``norm_out``, ``conv_out``), ``quant_conv`` and the bottleneck learn to reach the HQ dictionary's codes.
            ``['quantize', 'post_quant_conv', 'decoder']`` trains the whole encoder instead (pair it with image
            losses: the MHCA queries then move).
    """

    image_range = (-1.0, 1.0)
    prior_param_key = 'params'
    FROZEN_BEFORE_LATENT = ('quantize', 'post_quant_conv', 'decoder', 'encoder.conv_in', 'encoder.down',
                            'encoder.mid')

    def __init__(self, bottleneck=None, embed_dim=256, n_embed=1024, double_z=False, z_channels=256, resolution=512,
                 in_channels=3, out_ch=3, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, dropout=0.0,
                 attn_resolutions=(16, ), enable_mid=True, head_size=8, fix_modules=FROZEN_BEFORE_LATENT):
        super().__init__()
        build_taming_autoencoder(self, embed_dim, n_embed, double_z, z_channels, resolution, in_channels, out_ch, ch,
                                 ch_mult, num_res_blocks, attn_resolutions, dropout, enable_mid, head_size)
        self.img_size = resolution  # the aligned face size
        side = resolution // self.scale_factor
        self.bottleneck = build_bottlenecks(bottleneck, [(n_embed, embed_dim)], [(side, side)])[0]
        self.register_load_state_dict_pre_hook(strip_lightning_prefix)  # the released Lightning files: `vqvae.`
        for name in fix_modules or ():
            for p in self.get_submodule(name).parameters():
                p.requires_grad = False

    def check_input(self, x):
        check_image_input(self, x, self.scale_factor)

    @property
    def codebooks(self):
        return [self.quantize.embedding.weight]

    @property
    def bottlenecks(self):
        return [self.bottleneck]

    @property
    def decoder_last_layer(self):
        return self.decoder.conv_out.weight

    def prior_config(self):
        """The HQ dictionary: a :class:`VQVAEGAN` of the same configuration."""
        return dict(type='VQVAEGAN', **self.config)

    def encode(self, lq):
        """(B, 3, H, W) -> ([quant_conv(hs['out']) (B, C, H/f, W/f)], hs): ``hs`` is the encoder's feature dict, the
        decoder's cross-attention source."""
        self.check_input(lq)
        hs = self.encoder(lq)
        return [self.quant_conv(hs['out'])], hs

    def decode(self, feats, context):
        """[codebook-space feature] and the encoder's ``hs`` -> image: ``post_quant_conv`` then the MHCA decoder."""
        return self.decoder(self.post_quant_conv(feats[0]), context)


@ARCH_REGISTRY.register()
class VQVAEGANMultiHeadTransformer(SinCARestoreFormer):
    """The official RestoreFormer (``RestoreFormer.yaml``; the released Lightning file loads through the package's
    loader, which drops its ``loss.*`` keys and strips its ``vqvae.`` prefix).

    Official arguments: the ``ddconfig`` keys plus ``fix_decoder`` / ``fix_codebook`` / ``fix_encoder`` (what the
    upstream stage freezes; default: the codebook only). ``forward(x)`` returns ``(dec, emb_loss, info, hs)`` with
    ``info = (perplexity, min_encodings, indices, distances)``. To train, use :class:`SinCARestoreFormer` with
    ``bottleneck: nearest`` (the same keys).
    """

    official_forward = True

    def __init__(self, embed_dim=256, n_embed=1024, double_z=False, z_channels=256, resolution=512, in_channels=3,
                 out_ch=3, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, dropout=0.0, attn_resolutions=(16, ),
                 enable_mid=True, fix_decoder=False, fix_codebook=True, fix_encoder=False, head_size=8):
        frozen = [m for m, on in (('decoder', fix_decoder), ('quantize', fix_codebook), ('encoder', fix_encoder)) if on]
        super().__init__('nearest', embed_dim, n_embed, double_z, z_channels, resolution, in_channels, out_ch, ch,
                         ch_mult, num_res_blocks, dropout, attn_resolutions, enable_mid, head_size, frozen)

    def forward(self, x):
        latents, hs = self.encode(x)
        quant, emb_loss, info = self.quantize(latents[0])
        return self.decode([quant], hs), emb_loss, info, hs
