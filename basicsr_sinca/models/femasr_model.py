"""FeMaSR's LQ (super-resolution) stage with any bottleneck. Images are in [0, 1].

The HQ prior (``path.pretrain_network_hq``, e.g. ``FeMaSR_HRP_model_g.pth``) initialises the SR net
non-strictly (decoder, codebook and quantiser convs; mismatched encoder shapes are skipped) unless
``pretrain_network_g`` is given, and a frozen copy of it gives the targets on the ground truth.
"""
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.archs.bottleneck_arch import lookup_codes, nearest_code_indices
from basicsr_sinca.models.base import SinCABaseModel
from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict

__all__ = ['FeMaSRLQModel']

# keys of FeMaSR_HRP_model_g.pth that belong to its HQ-pretraining semantic branch (no effect on the forward)
SEMANTIC_PREFIXES = ('conv_semantic.', 'vgg_feat_extractor.')


@MODEL_REGISTRY.register()
class FeMaSRLQModel(SinCABaseModel):
    """FeMaSR SR stage: L1 (``pixel_opt``), LPIPS (``perceptual_opt``), hinge GAN with a U-Net discriminator
    (``gan_opt``, ``network_d``) and the bottleneck's code losses against the HQ prior's nearest codes on the
    ground truth: Eq. 6 (``feat_opt``) for SinCA/SA/CA, ``codebook_opt`` (``FeMaSRCodebookLoss``: 0.25·MSE +
    Gram) for the original ``nearest`` re-train, ``ce_opt`` for ``sinca_index``.

    Validation/test run the network's ``test`` (mirror padding) or, for LR images over ``val.max_size``² pixels,
    ``test_tile`` (``val.tile_size``, ``val.tile_pad``).
    """

    def init_training_settings(self):
        train_opt = self.opt['train']
        hq_path = self.opt['path'].get('pretrain_network_hq')
        if hq_path is None:
            raise ValueError('path.pretrain_network_hq: the FeMaSR SR stage needs the HQ prior '
                             '(e.g. experiments/pretrained_models/FeMaSR/FeMaSR_HRP_model_g.pth)')
        if self.opt['path'].get('pretrain_network_g') is None:
            self.load_network(self.net_g, hq_path, strict=False, param_key='params')
        self.net_g.train()
        self.setup_ema()
        self.build_teacher(hq_path)
        self.setup_code_losses()

        self.setup_discriminator()
        self.setup_image_losses()
        self.net_d_iters = train_opt.get('net_d_iters', 1)
        self.net_d_init_iters = train_opt.get('net_d_init_iters', 0)
        self.setup_optimizers()
        self.setup_schedulers()

    def build_teacher(self, path):
        """Frozen HQ prior: its encoder + codebook give z_hat and the ground-truth code indices."""
        bare = self.get_bare_model(self.net_g)
        hq_opt = deepcopy(self.opt.get('network_hq') or dict(type='FeMaSRNet', **bare.femasr_config))
        hq_opt['LQ_stage'] = False
        teacher = build_network(hq_opt)
        state_dict, used = read_state_dict(path, self.opt['path'].get('param_key_hq', 'params'))
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(SEMANTIC_PREFIXES)}
        load_state_dict_report(teacher, state_dict, strict=True, source=f'HQ prior {path} [{used}]')
        for p in teacher.parameters():
            p.requires_grad = False
        self.teacher = teacher.to(self.device).eval()
        get_root_logger().info(f'Targets from the frozen HQ prior {path}')

    @torch.no_grad()
    def teacher_targets(self, gt):
        z, _ = self.teacher.encode(gt)
        indices, _ = nearest_code_indices(z, self.teacher.codebook)
        return lookup_codes(indices, self.teacher.codebook), indices

    def optimize_parameters(self, current_iter):
        self.set_d_trainable(False)
        self.optimizer_g.zero_grad()
        z_hat, idx_gt = self.teacher_targets(self.gt)
        self.output, aux = self.net_g(self.lq, return_aux=True)
        loss_dict = OrderedDict()
        l_total = self.code_losses(aux, z_hat, idx_gt, loss_dict) + self.image_losses(self.output, loss_dict)
        if self.cri_gan is not None:
            loss_dict['l_g_gan'] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            l_total = l_total + loss_dict['l_g_gan']
        l_total.backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

        if self.cri_gan is not None and current_iter > self.net_d_init_iters and current_iter % self.net_d_iters == 0:
            self.optimize_discriminator(self.output, loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def test(self):
        val_opt = self.opt.get('val') or {}
        max_size = val_opt.get('max_size', 600)
        with self.evaluation_net() as net:
            net = self.get_bare_model(net)
            if self.lq.shape[-2] * self.lq.shape[-1] <= max_size**2:
                self.output = net.test(self.lq)
            else:
                self.output = net.test_tile(self.lq, val_opt.get('tile_size', 240), val_opt.get('tile_pad', 16))
