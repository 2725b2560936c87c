"""Feature-matching objective of the SinCA bottleneck (paper Eq. 6)."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

__all__ = ['FeatureMatchingLoss', 'CodeCrossEntropyLoss']


@LOSS_REGISTRY.register()
class FeatureMatchingLoss(nn.Module):
    """``L = match_weight·||z_hat - z_t||^2 + lq_weight·||z_l - sg(z_hat)||^2`` (mean squared errors).

    ``z_hat`` is the quantised feature of the ground truth from the frozen HQ encoder + codebook (a
    teacher, no gradient), ``z_t`` the bottleneck output and ``z_l`` the LQ encoder feature.

    Args:
        match_weight (float): Weight of the transformer term. Default: 1.0.
        lq_weight (float): Weight of the encoder term. Default: 1.0.
        loss_weight (float): Global factor (BasicSR convention). Default: 1.0.
    """

    def __init__(self, match_weight=1.0, lq_weight=1.0, loss_weight=1.0):
        super().__init__()
        self.match_weight, self.lq_weight, self.loss_weight = match_weight, lq_weight, loss_weight

    def forward(self, transformer_feat, lq_feat, target_feat):
        """
        Args:
            transformer_feat (Tensor): z_t, (B, C, H, W); None skips the term (e.g. an index bottleneck).
            lq_feat (Tensor): z_l, (B, C, H, W); None skips the term.
            target_feat (Tensor): z_hat, (B, C, H, W); detached here.

        Returns:
            tuple[Tensor | None, Tensor | None]: the weighted transformer term and encoder term, to be logged
            separately and summed.
        """
        target = target_feat.detach()
        l_match = l_lq = None
        if transformer_feat is not None and self.match_weight:
            l_match = self.loss_weight * self.match_weight * F.mse_loss(transformer_feat, target)
        if lq_feat is not None and self.lq_weight:
            l_lq = self.loss_weight * self.lq_weight * F.mse_loss(lq_feat, target)
        return l_match, l_lq


@LOSS_REGISTRY.register()
class CodeCrossEntropyLoss(nn.Module):
    """Cross-entropy between predicted code logits and ground-truth code indices (CodeFormer's index loss).

    Args:
        loss_weight (float): Default: 1.0 (CodeFormer uses 0.5).
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits, target_indices):
        """logits (B, N, M), target indices (B, N) or (B, H, W) -> scalar."""
        return self.loss_weight * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_indices.reshape(-1))
