"""CodeFormer restoration stages with any bottleneck (stage 2: code prediction, stage 3: fidelity fusion).

Images are in [-1, 1] (CodeFormer's normalisation). Targets come from a frozen copy of the HQ prior
(VQGAN encoder + codebook) applied to the ground truth; its weights are read from
``network_vqgan.model_path``, ``path.pretrain_network_vqgan`` or ``network_g.vqgan_path``.
"""
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.archs.bottleneck_arch import lookup_codes, nearest_code_indices
from basicsr_sinca.archs.codeformer_arch import load_official_weights
from basicsr_sinca.models.base import SinCABaseModel

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


class CodeFormerBaseModel(SinCABaseModel):
    """Shared by both stages: frozen HQ teacher, code-level losses, [-1, 1] visuals, EMA evaluation."""

    default_val_w = 0.0
    image_range = (-1.0, 1.0)

    def init_training_settings(self):
        self.net_g.train()
        self.setup_ema()
        self.build_teacher()
        self.setup_code_losses()

    def build_teacher(self):
        """Frozen HQ prior (encoder + codebook) giving the targets z_hat and the ground-truth code indices."""
        bare = self.get_bare_model(self.net_g)
        vq_opt = deepcopy(self.opt.get('network_vqgan') or dict(type='VQAutoEncoder', **bare.vqgan_config))
        path = (vq_opt.pop('model_path', None) or self.opt['path'].get('pretrain_network_vqgan')
                or self.opt['network_g'].get('vqgan_path'))
        if path is None:
            raise ValueError('the targets need the stage-1 HQ prior: set network_vqgan.model_path, '
                             'path.pretrain_network_vqgan or network_g.vqgan_path '
                             '(e.g. experiments/pretrained_models/vqgan/vqgan_code1024.pth)')
        teacher = build_network(vq_opt)
        load_official_weights(teacher, path, self.opt['path'].get('param_key_vqgan', 'params_ema'), 'HQ prior')
        del teacher.generator  # only encoder and codebook are needed
        for p in teacher.parameters():
            p.requires_grad = False
        self.teacher = teacher.to(self.device).eval()
        get_root_logger().info(f'Stage targets from the frozen HQ prior {path}')

    @torch.no_grad()
    def teacher_targets(self, gt):
        """z_hat (B, C, h, w) = nearest codebook rows of the HQ encoder on ``gt``, and their indices (B, h, w)."""
        z = self.teacher.encoder(gt)
        codebook = self.teacher.quantize.embedding.weight
        indices, _ = nearest_code_indices(z, codebook)
        return lookup_codes(indices, codebook), indices

    def feed_data(self, data):
        self.lq = (data['lq'] if 'lq' in data else data['in']).to(self.device)
        large = data.get('lq_large', data.get('in_large_de'))
        self.lq_large = large.to(self.device) if large is not None else None
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)

    def test(self):
        val_opt = self.opt.get('val') or {}
        w = val_opt.get('fidelity_weight', self.default_val_w)
        adain = val_opt.get('adain', False)
        with self.evaluation_net() as net:
            self.output = net(self.lq, w=w, adain=adain)[0]


@MODEL_REGISTRY.register()
class CodeFormerStage2Model(CodeFormerBaseModel):
    """Stage 2: learn the bottleneck (and fine-tune the encoder) on LQ faces; codebook and generator frozen.

    SinCA/SA/CA bottlenecks train with the feature-matching loss (``train.feat_opt``, Eq. 6); ``index`` and
    ``sinca_index`` with cross-entropy (``train.ce_opt``, CodeFormer: weight 0.5) plus the encoder term of
    ``feat_opt`` (CodeFormer's feature loss, weight 1). The fusion layers are unused at w = 0 and frozen here.
    """

    def __init__(self, opt):
        # freeze the fusion layers before the network is built and wrapped (DDP must not wait for them)
        fixed = list(opt['network_g'].get('fix_modules', ['quantize', 'generator']))
        if opt.get('is_train') and 'fuse_convs_dict' not in fixed:
            opt['network_g']['fix_modules'] = fixed + ['fuse_convs_dict']
        super().__init__(opt)

    def init_training_settings(self):
        super().init_training_settings()
        self.setup_optimizers()
        self.setup_schedulers()

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        aux = self.net_g(self.lq, code_only=True, return_aux=True)
        z_hat, idx_gt = self.teacher_targets(self.gt)
        loss_dict = OrderedDict()
        l_total = self.code_losses(aux, z_hat, idx_gt, loss_dict)
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class CodeFormerStage3Model(CodeFormerBaseModel):
    """Stage 3: controllable feature transformation with CodeFormer's fidelity-weight schedule.

    Full passes (small degradation ``lq``, weight ``w``) add L1 (``pixel_opt``), LPIPS (``perceptual_opt``)
    and hinge GAN (``gan_opt``, after ``net_d_start_iter``) with the adaptive weight
    ``clamp(|grad rec| / (|grad gan| + 1e-4), 0, 1) · scale_adaptive_gan_weight`` taken at the last conv of
    the highest-resolution fusion layer; code-only passes (large degradation ``lq_large``) keep the stage-2
    code losses. The discriminator (CodeFormer's ``VQGANDiscriminator``) is updated on full passes.
    """

    default_val_w = 0.5

    def init_training_settings(self):
        super().init_training_settings()
        train_opt = self.opt['train']
        self.setup_discriminator()
        self.setup_image_losses()
        self.net_d_start_iter = train_opt.get('net_d_start_iter', 5001)
        self.scale_adaptive_gan_weight = train_opt.get('scale_adaptive_gan_weight', 0.1)
        self.fidelity_schedule = parse_fidelity_schedule(train_opt.get('fidelity_schedule', OFFICIAL_FIDELITY_SCHEDULE))
        self.setup_optimizers()
        self.setup_schedulers()

    def fidelity_step(self, current_iter):
        """(w, full pass?) for this iteration."""
        for until, w, every in self.fidelity_schedule:
            if until is None or current_iter <= until:
                return w, every > 0 and current_iter % every == 0
        raise AssertionError('unreachable: the schedule ends open')

    def optimize_parameters(self, current_iter):
        w, full = self.fidelity_step(current_iter)
        self.set_d_trainable(False)
        self.optimizer_g.zero_grad()
        z_hat, idx_gt = self.teacher_targets(self.gt)
        loss_dict = OrderedDict()
        if full:
            self.output, aux = self.net_g(self.lq, w=w, return_aux=True)
        else:
            aux = self.net_g(self.lq_large if self.lq_large is not None else self.lq, code_only=True, return_aux=True)
        l_total = self.code_losses(aux, z_hat, idx_gt, loss_dict)
        loss_dict['w'] = torch.tensor(w, device=self.device)

        use_gan = full and self.cri_gan is not None and current_iter > self.net_d_start_iter
        if full:
            recon = self.image_losses(self.output, loss_dict, 'l_g_pix', 'l_g_percep')
            l_total = l_total + recon
            if use_gan:
                l_g_gan = self.cri_gan(self.net_d(self.output), True, is_disc=False)
                bare = self.get_bare_model(self.net_g)
                last = bare.fuse_convs_dict[max(bare.connect_list, key=int)].shift[-1].weight
                d_weight = (self.adaptive_gan_weight(recon, l_g_gan, last) * self.scale_adaptive_gan_weight
                            if torch.is_tensor(recon) else self.scale_adaptive_gan_weight)
                loss_dict['l_g_gan'] = d_weight * l_g_gan
                loss_dict['d_weight'] = torch.as_tensor(d_weight, device=self.device)
                l_total = l_total + loss_dict['l_g_gan']
        l_total.backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

        if use_gan:
            self.optimize_discriminator(self.output, loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)


@MODEL_REGISTRY.register()
class CodeFormerPriorModel(SinCABaseModel):
    """Stage 1: the VQGAN prior (``VQAutoEncoder``) auto-encoding HQ images, CodeFormer's recipe.

    L1 (``pixel_opt``) + LPIPS (``perceptual_opt``) + the quantiser's codebook loss (``codebook_loss_weight``,
    default 1) + hinge GAN (``gan_opt``, CodeFormer's ``VQGANDiscriminator``) after ``net_d_start_iter``, weighted
    by the adaptive weight at the generator's last conv (clamped to 1) times ``disc_weight`` (0.8). The
    discriminator trains from the same iteration. Logs the codebook perplexity. Images in [-1, 1] from the
    ``gt`` key (e.g. ``FFHQBlindDataset`` with ``use_corrupt: false``).

    ``train.codebook_restart_every: N`` (not in CodeFormer's recipe; off by default) re-seeds the codes unused
    during the last N iterations with encoder outputs of the current batch — against the codebook collapse of
    very short trainings such as the quickstart's.
    """

    image_range = (-1.0, 1.0)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        self.setup_ema()
        self.setup_discriminator()
        self.setup_image_losses()
        self.codebook_loss_weight = train_opt.get('codebook_loss_weight', 1.0)
        self.net_d_start_iter = train_opt.get('net_d_start_iter', 30001)
        self.disc_weight = train_opt.get('disc_weight', 0.8)
        self.restart_every = int(train_opt.get('codebook_restart_every') or 0)
        self.code_counts = None
        self.setup_optimizers()
        self.setup_schedulers()

    @torch.no_grad()
    def restart_dead_codes(self, current_iter, stats):
        """Count code usage; every ``restart_every`` iterations re-seed unused codes from encoder outputs."""
        codebook = self.get_bare_model(self.net_g).quantize.embedding.weight
        counts = torch.bincount(stats['min_encoding_indices'].reshape(-1), minlength=codebook.shape[0])
        self.code_counts = counts if self.code_counts is None else self.code_counts + counts
        if current_iter % self.restart_every:
            return 0
        if self.opt['dist']:
            torch.distributed.all_reduce(self.code_counts)
        dead = (self.code_counts == 0).nonzero().reshape(-1)
        if dead.numel():
            z = self.get_bare_model(self.net_g).encoder(self.gt).permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
            pick = torch.randint(0, z.shape[0], (dead.numel(), ), device=z.device)
            codebook[dead] = z[pick]
            if self.opt['dist']:
                torch.distributed.broadcast(codebook, src=0)
        self.code_counts = None
        return dead.numel()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = self.gt  # the input of an auto-encoder; shown as "lq" in visuals

    def optimize_parameters(self, current_iter):
        self.set_d_trainable(False)
        self.optimizer_g.zero_grad()
        self.output, l_codebook, stats = self.net_g(self.gt)
        loss_dict = OrderedDict(l_codebook=l_codebook * self.codebook_loss_weight)
        recon = self.image_losses(self.output, loss_dict)
        l_total = recon + loss_dict['l_codebook']
        use_gan = self.cri_gan is not None and current_iter > self.net_d_start_iter
        if use_gan:
            l_g_gan = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            last = self.get_bare_model(self.net_g).generator.blocks[-1].weight
            d_weight = self.adaptive_gan_weight(recon, l_g_gan, last) * self.disc_weight
            loss_dict['l_g_gan'], loss_dict['d_weight'] = d_weight * l_g_gan, d_weight
            l_total = l_total + loss_dict['l_g_gan']
        l_total.backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        loss_dict['perplexity'] = stats['perplexity'].detach()
        if self.restart_every:
            loss_dict['restarted_codes'] = torch.tensor(float(self.restart_dead_codes(current_iter, stats)),
                                                        device=self.device)
        if use_gan:
            self.optimize_discriminator(self.output, loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def test(self):
        with self.evaluation_net() as net:
            self.output = net(self.gt)[0]
