"""ArcFace identity loss (RestoreFormer, GFPGAN): L1 between the embeddings of the restored face and of the GT."""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_sinca.archs.arcface_arch import ArcFaceResNet, gray_resize_for_identity

__all__ = ['ArcFaceIdentityLoss']


@LOSS_REGISTRY.register()
class ArcFaceIdentityLoss(nn.Module):
    """``loss_weight · |arcface(gray(pred)) - sg(arcface(gray(target)))|_1`` (mean over the 512-d embeddings).

    The ArcFace network (:class:`ArcFaceResNet`) is frozen and in eval mode; faces go to gray 128x128 on their own
    scale (RestoreFormer: [-1, 1]).

    Args:
        loss_weight (float): Weight (RestoreFormer's recipe: 3). Default: 1.0.
        model_path (str | None): ``arcface_resnet18.pth`` (local; there is no download). Required unless
            ``random_weights``.
        random_weights (bool): A random ArcFace (tests only). Default: False.
    """

    def __init__(self, loss_weight=1.0, model_path=None, random_weights=False):
        super().__init__()
        if model_path is None and not random_weights:
            raise ValueError('ArcFaceIdentityLoss: model_path: put arcface_resnet18.pth (RestoreFormer / GFPGAN '
                             'release) in experiments/pretrained_models/ and give its path (random_weights: true '
                             'is for tests only)')
        self.loss_weight = loss_weight
        self.net = ArcFaceResNet(model_path=model_path).eval()
        for p in self.net.parameters():
            p.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self.net.eval()  # BatchNorm statistics of the released network, always
        return self

    def forward(self, pred, target):
        """Faces (B, 3, H, W) -> scalar."""
        target_emb = self.net(gray_resize_for_identity(target)).detach()
        return self.loss_weight * nn.functional.l1_loss(self.net(gray_resize_for_identity(pred)), target_emb)
