"""FeMaSR's LQ-stage codebook loss, for the ``nearest`` (re-train) bottleneck."""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_sinca.archs.femasr_arch import femasr_feature_loss

__all__ = ['FeMaSRCodebookLoss']


@LOSS_REGISTRY.register()
class FeMaSRCodebookLoss(nn.Module):
    """``loss_weight · (beta·mean((sg(e_gt) - z)^2) + gram(z, sg(e_gt)))`` on the feature entering the quantiser.

    Args:
        beta (float): Weight of the MSE term. Default: 0.25.
        loss_weight (float): Default: 1.0.
    """

    def __init__(self, beta=0.25, loss_weight=1.0):
        super().__init__()
        self.beta, self.loss_weight = beta, loss_weight

    def forward(self, feat, target):
        """feat z (B, C, h, w), target e_gt (B, C, h, w) -> scalar."""
        return self.loss_weight * femasr_feature_loss(feat, target, self.beta)
