"""The code losses: Eq. 6 (feature matching) and code cross-entropy."""
import torch
import torch.nn.functional as F

from basicsr_sinca.losses.sinca_loss import CodeCrossEntropyLoss, FeatureMatchingLoss


def test_feature_matching_loss_eq6():
    torch.manual_seed(0)
    target = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_t = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_l = torch.randn(2, 8, 4, 4, requires_grad=True)
    l_match, l_lq = FeatureMatchingLoss()(z_t, z_l, target)
    assert torch.allclose(l_match, ((target - z_t) ** 2).mean())
    assert torch.allclose(l_lq, ((z_l - target) ** 2).mean())
    (l_match + l_lq).backward()
    assert target.grad is None and z_t.grad is not None and z_l.grad is not None
    l_match, l_lq = FeatureMatchingLoss(match_weight=2.0, lq_weight=0.0, loss_weight=0.5)(z_t, z_l, target)
    assert l_lq is None and torch.allclose(l_match, ((target - z_t) ** 2).mean())


def test_code_cross_entropy_any_index_shape():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 10)
    target = torch.randint(0, 10, (2, 2, 3))
    ref = F.cross_entropy(logits.reshape(-1, 10), target.reshape(-1))
    assert torch.allclose(CodeCrossEntropyLoss(loss_weight=0.5)(logits, target), 0.5 * ref)
