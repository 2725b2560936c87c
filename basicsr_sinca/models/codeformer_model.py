"""CodeFormer's stages with any bottleneck: stage 1 (the VQGAN prior), stage 2 (code prediction), stage 3
(fidelity fusion).

Images are in [-1, 1] (CodeFormer's normalisation). The restoration stages are :class:`VQRestorationModel`s:
targets come from the frozen HQ prior (``path.pretrain_network_hq``, e.g. ``vqgan_code1024.pth``) applied to the
ground truth.
"""
import torch
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.models.prior_model import VQPriorModel
from basicsr_sinca.models.restoration_model import VQRestorationModel

__all__ = ['CodeFormerPriorModel', 'CodeFormerStage2Model', 'CodeFormerStage3Model', 'parse_fidelity_schedule']

# CodeFormer stage 3 (until_iter, w, full_pass_every): full passes on the small degradation train the fusion
# layers with image losses; the other iterations are code-only passes on the large degradation.
OFFICIAL_FIDELITY_SCHEDULE = [[40000, 1.0, 1], [80000, 1.3, 1], [120000, 0.0, 0], [None, 1.3, 15]]


def parse_fidelity_schedule(schedule):
    """Validate ``train.fidelity_schedule`` (a list of ``[until_iter | ~, w, full_pass_every]``)."""
    rows = []
    for i, row in enumerate(schedule):
        ok = isinstance(row, (list, tuple)) and len(row) == 3 and (row[0] is None or isinstance(row[0], int))
        ok = ok and isinstance(row[1], (int, float)) and row[1] >= 0 and isinstance(row[2], int) and row[2] >= 0
        if not ok:
            raise ValueError(f'train.fidelity_schedule[{i}]: expected [until_iter or ~, w >= 0, full_pass_every >= 0], '
                             f'got {row!r}')
        if row[2] > 0 and row[1] == 0:
            raise ValueError(f'train.fidelity_schedule[{i}]: full passes with w = 0 leave the fusion layers unused '
                             f'(CodeFormer issues #251/#297); use full_pass_every 0 there, got {row!r}')
        rows.append((row[0], float(row[1]), row[2]))
    if not rows or rows[-1][0] is not None:
        raise ValueError('train.fidelity_schedule: the last entry must have until_iter ~ (open end)')
    return rows


class CodeFormerRestorationModel(VQRestorationModel):
    """What both CodeFormer restoration stages add to :class:`VQRestorationModel`: the dataset keys of
    CodeFormer's blind datasets and validation with ``val.fidelity_weight`` / ``val.adain``."""

    default_val_w = 0.0

    def feed_data(self, data):
        self.lq = (data['lq'] if 'lq' in data else data['in']).to(self.device)
        large = data.get('lq_large', data.get('in_large_de'))
        self.lq_large = large.to(self.device) if large is not None else None
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)

    def test(self):
        val_opt = self.opt.get('val') or {}
        w = val_opt.get('fidelity_weight', self.default_val_w)
        with self.evaluation_net() as net:
            self.output = net.restore(self.lq, w=w, adain=val_opt.get('adain', False)).image


@MODEL_REGISTRY.register()
class CodeFormerStage2Model(CodeFormerRestorationModel):
    """Stage 2: learn the bottleneck (and fine-tune the encoder) on LQ faces; codebook and generator frozen.

    Code-only passes (w = 0). SinCA/SA/CA bottlenecks train with the feature-matching loss (``train.feat_opt``,
    Eq. 6); ``index`` and ``sinca_index`` with cross-entropy (``train.ce_opt``, CodeFormer: weight 0.5) plus the
    encoder term of ``feat_opt`` (CodeFormer's feature loss, weight 1). The fusion layers are unused at w = 0:
    the stage-2 option files list them in ``network_g.fix_modules`` (DDP must not wait for their gradients).
    """


@MODEL_REGISTRY.register()
class CodeFormerStage3Model(CodeFormerRestorationModel):
    """Stage 3: controllable feature transformation with CodeFormer's fidelity-weight schedule.

    Full passes (small degradation ``lq``, weight ``w``) add L1 (``pixel_opt``), LPIPS (``perceptual_opt``)
    and hinge GAN (``gan_opt``, after ``net_d_start_iter``) with the adaptive weight
    ``clamp(|grad rec| / (|grad gan| + 1e-4), 0, 1) · scale_adaptive_gan_weight`` taken at the last conv of
    the highest-resolution fusion layer; code-only passes (large degradation ``lq_large``) keep the stage-2
    code losses. The discriminator (CodeFormer's ``VQGANDiscriminator``) is updated on full passes.
    """

    default_val_w = 0.5
    default_net_d_start_iter = 5001

    def setup_stage(self):
        super().setup_stage()
        train_opt = self.opt['train']
        self.scale_adaptive_gan_weight = train_opt.get('scale_adaptive_gan_weight', 0.1)
        self.fidelity_schedule = parse_fidelity_schedule(train_opt.get('fidelity_schedule', OFFICIAL_FIDELITY_SCHEDULE))

    def fidelity_step(self, current_iter):
        """(w, full pass?) for this iteration."""
        for until, w, every in self.fidelity_schedule:
            if until is None or current_iter <= until:
                return w, every > 0 and current_iter % every == 0
        raise AssertionError('unreachable: the schedule ends open')

    def generator_loss(self, current_iter, loss_dict):
        w, full = self.fidelity_step(current_iter)
        targets = self.prior_targets(self.gt)
        if full:
            output = self.net_g(self.lq, w=w)
            self.output = output.image
        else:
            output = self.net_g(self.lq_large if self.lq_large is not None else self.lq, code_only=True)
        total = self.code_losses(output, targets, loss_dict)
        loss_dict['w'] = torch.tensor(w, device=self.device)
        if full:
            recon = self.image_losses(self.output, loss_dict, 'l_g_pix', 'l_g_percep')
            bare = self.get_bare_model(self.net_g)
            last = bare.fuse_convs_dict[max(bare.connect_list, key=int)].shift[-1].weight
            total = total + recon + self.gan_generator_term(current_iter, self.output, loss_dict, recon, last,
                                                            self.scale_adaptive_gan_weight)
        return total


@MODEL_REGISTRY.register()
class CodeFormerPriorModel(VQPriorModel):
    """Stage 1: CodeFormer's VQGAN prior (``VQAutoEncoder``) with CodeFormer's recipe — :class:`VQPriorModel` under
    the name CodeFormer's option files use. Images in [-1, 1] from the ``gt`` key (e.g. ``FFHQBlindDataset`` with
    ``use_corrupt: false``)."""
