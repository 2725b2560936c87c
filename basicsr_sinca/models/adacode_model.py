"""AdaCode's SR stage (stage 3) with any bottlenecks, on FeMaSR's SR stage. Images are in [0, 1].

The HQ model of stage 2 (``path.pretrain_network_hq``, e.g. ``AdaCode_S2_model_g.pth``) initialises the SR net
non-strictly and is the frozen teacher: per-codebook targets (its nearest codes) and, for AdaCode's own terms, its
decoder input and encoder feature on the ground truth.
"""
import torch
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.archs.femasr_arch import femasr_feature_loss
from basicsr_sinca.archs.restorer_arch import targets_from_latents
from basicsr_sinca.models.femasr_model import FeMaSRLQModel

__all__ = ['AdaCodeLQModel']


@MODEL_REGISTRY.register()
class AdaCodeLQModel(FeMaSRLQModel):
    """AdaCode stage 3: FeMaSR's SR-stage losses (L1, LPIPS, hinge GAN, per-codebook code losses: Eq. 6 for
    SinCA/SA/CA, ``codebook_opt`` for the ``nearest`` re-train) plus AdaCode's own terms against the HQ model on the
    ground truth: ``after_quant_weight`` (default 1) x F(decoder input, HQ decoder input) and
    ``before_quant_weight`` (default 0) x F(encoder feature, HQ encoder feature), F = 0.25·MSE + Gram, and
    ``contrast_opt`` (``AdaCodeContrastLoss``, NT-Xent between the LQ and HQ encoder features; its ``batch_size``
    must be the training batch size: BasicSR's training loader drops the last incomplete batch).
    """

    def setup_stage(self):
        super().setup_stage()
        train_opt = self.opt['train']
        self.after_quant_weight = train_opt.get('after_quant_weight', 1.0)
        self.before_quant_weight = train_opt.get('before_quant_weight', 0.0)
        self.cri_contrast = build_loss(train_opt['contrast_opt']).to(self.device) if train_opt.get('contrast_opt') \
            else None

    @torch.no_grad()
    def prior_targets(self, gt):
        """The HQ model's per-codebook targets, keeping its encoder feature and decoder input for AdaCode's terms
        (one HQ pass)."""
        latents, context = self.prior.encode(gt)
        targets = targets_from_latents(latents, self.prior.codebooks)
        context['feat_before_decoder'] = self.prior.combine_codes([t.feat for t in targets], context)
        self.hq_context = context
        return targets

    def generator_loss(self, current_iter, loss_dict):
        total = super().generator_loss(current_iter, loss_dict)
        context, hq = self.last_output.context, self.hq_context
        if self.after_quant_weight:
            loss_dict['l_after_quant'] = self.after_quant_weight * femasr_feature_loss(
                context['feat_before_decoder'], hq['feat_before_decoder'])
            total = total + loss_dict['l_after_quant']
        if self.before_quant_weight:
            loss_dict['l_before_quant'] = self.before_quant_weight * femasr_feature_loss(
                context['feat_before_quant'], hq['feat_before_quant'])
            total = total + loss_dict['l_before_quant']
        if self.cri_contrast is not None:
            loss_dict['l_contrast'] = self.cri_contrast(context['feat_before_quant'], hq['feat_before_quant'])
            total = total + loss_dict['l_contrast']
        return total
