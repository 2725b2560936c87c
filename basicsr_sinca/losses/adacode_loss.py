"""AdaCode's contrastive loss (NT-Xent between LQ and HQ features), registered for ``train.contrast_opt``."""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

__all__ = ['AdaCodeContrastLoss']


@LOSS_REGISTRY.register()
class AdaCodeContrastLoss(nn.Module):
    """AdaCode's NT-Xent between LQ and HQ features (temperature 0.5), the similarity of two samples being the
    channel cosine averaged over positions. ``temperature`` and ``negatives_mask`` (1 - identity, (2B, 2B)) are
    persistent buffers, as in the released stage-3 files; every batch must have ``batch_size`` samples.

    Args:
        batch_size (int): B.
        temperature (float): Default: 0.5.
        loss_weight (float): Default: 1.0.
    """

    def __init__(self, batch_size, temperature=0.5, loss_weight=1.0):
        super().__init__()
        self.batch_size, self.loss_weight = int(batch_size), loss_weight
        self.register_buffer('temperature', torch.tensor(float(temperature)))
        self.register_buffer('negatives_mask', 1 - torch.eye(2 * self.batch_size))

    def forward(self, lq_feat, hq_feat):
        """(B, C, h, w) LQ and HQ features -> scalar."""
        b = lq_feat.shape[0]
        if b != self.batch_size:
            raise ValueError(f'AdaCodeContrastLoss: batch of {b} samples, built for batch_size={self.batch_size} '
                             '(the training loader drops the last incomplete batch; set batch_size to the batch size)')
        z = F.normalize(torch.cat([lq_feat, hq_feat]).flatten(2), dim=1)  # (2B, C, N), unit channel vectors
        sim = torch.einsum('acn,bcn->ab', z, z) / z.shape[-1]
        positives = torch.cat([torch.diagonal(sim, b), torch.diagonal(sim, -b)])
        denominator = (self.negatives_mask * torch.exp(sim / self.temperature)).sum(dim=1)
        loss = -torch.log(torch.exp(positives / self.temperature) / denominator)
        return self.loss_weight * loss.sum() / (2 * b)
