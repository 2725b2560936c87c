"""FeMaSR's LQ-stage feature loss (``FeMaSRCodebookLoss``, also AdaCode's after-quant term) against the formula
written out sample by sample in float64: beta·MSE + the MSE of the per-sample Gram matrices, target stop-gradient."""
import torch

from basicsr_sinca.losses.femasr_loss import FeMaSRCodebookLoss


def _by_hand(feat, target, beta):
    feat, target = feat.double(), target.double()
    b, c, h, w = feat.shape
    mse = sum(((target[i] - feat[i]) ** 2).sum() for i in range(b)) / (b * c * h * w)
    gram = 0
    for i in range(b):
        fx, fy = feat[i].reshape(c, h * w), target[i].reshape(c, h * w)
        gx = torch.stack([torch.stack([(fx[p] * fx[q]).sum() for q in range(c)]) for p in range(c)]) / (h * w)
        gy = torch.stack([torch.stack([(fy[p] * fy[q]).sum() for q in range(c)]) for p in range(c)]) / (h * w)
        gram = gram + ((gx - gy) ** 2).sum()
    return beta * mse + gram / (b * c * c)


def test_beta_mse_plus_gram_with_stop_gradient():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for beta, weight in ((0.25, 1.0), (1.0, 0.5)):
        loss = FeMaSRCodebookLoss(beta=beta, loss_weight=weight)(feat, target)
        expected = weight * _by_hand(feat.detach(), target.detach(), beta)
        assert torch.allclose(loss, expected, rtol=1e-12, atol=0), (beta, weight)
    # the Gram term is a real part of the value, not a rounding: with beta = 0 the loss is the Gram MSE alone
    gram_only = FeMaSRCodebookLoss(beta=0.0)(feat, target)
    assert gram_only > 1e-2 and torch.allclose(gram_only, _by_hand(feat.detach(), target.detach(), 0.0), rtol=1e-12)
    # stop-gradient on the target
    loss = FeMaSRCodebookLoss()(feat, target)
    loss.backward()
    assert target.grad is None and feat.grad is not None and feat.grad.abs().sum() > 0
