"""FeMaSR's LQ (super-resolution) stage with any bottleneck. Images are in [0, 1].

The HQ prior (``path.pretrain_network_hq``, e.g. ``FeMaSR_HRP_model_g.pth``) initialises the SR net
non-strictly (decoder, codebook and quantiser convs; mismatched encoder shapes are skipped) unless
``pretrain_network_g`` is given, and is the frozen teacher of :class:`VQRestorationModel`.
"""
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.models.restoration_model import VQRestorationModel

__all__ = ['FeMaSRLQModel']


@MODEL_REGISTRY.register()
class FeMaSRLQModel(VQRestorationModel):
    """FeMaSR SR stage: L1 (``pixel_opt``), LPIPS (``perceptual_opt``), hinge GAN with a U-Net discriminator
    (``gan_opt``, ``network_d``) and the bottleneck's code losses against the HQ prior's nearest codes on the
    ground truth: Eq. 6 (``feat_opt``) for SinCA/SA/CA, ``codebook_opt`` (``FeMaSRCodebookLoss``: 0.25·MSE +
    Gram) for the original ``nearest`` re-train, ``ce_opt`` for ``sinca_index``.

    Validation/test run the network's ``test`` (mirror padding) or, for LR images over ``val.max_size``² pixels,
    ``test_tile`` (``val.tile_size``, ``val.tile_pad``).
    """

    def setup_stage(self):
        hq_path = self.opt['path'].get('pretrain_network_hq')
        if hq_path is not None and self.opt['path'].get('pretrain_network_g') is None:
            self.load_network(self.net_g, hq_path, strict=False, param_key=self.opt['path'].get('param_key_hq',
                                                                                                'params'))
        super().setup_stage()

    def test(self):
        val_opt = self.opt.get('val') or {}
        max_size = val_opt.get('max_size', 600)
        with self.evaluation_net() as net:
            if self.lq.shape[-2] * self.lq.shape[-1] <= max_size**2:
                self.output = net.test(self.lq)
            else:
                self.output = net.test_tile(self.lq, val_opt.get('tile_size', 240), val_opt.get('tile_pad', 16))
