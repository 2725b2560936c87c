"""Training-model base shared by the baselines (not registered)."""
from collections import OrderedDict
from contextlib import contextmanager

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger

from basicsr_sinca.archs.bottleneck_arch import TransformerBottleneck

__all__ = ['SinCABaseModel']


class SinCABaseModel(SRModel):
    """SRModel plus what every restoration stage of this package needs.

    * EMA that averages only the parameters being trained: frozen modules (codebook, decoder) stay
      bit-identical to the prior in ``params_ema`` too (``x·d + x·(1-d)`` is not always ``x`` in floating point).
    * The bottleneck's code-level losses against teacher targets (:meth:`code_losses`).
    * A discriminator (``network_d``, ``path.pretrain_network_d``) with its optimizer and hinge/any-GAN step.
    * ``val.key_metric``: after a validation that improves it, ``net_g_best.pth`` (and ``net_d_best.pth``) are saved.
    * Visuals in [0, 1] whatever ``image_range`` the network works in (CodeFormer: [-1, 1]).
    """

    image_range = (0.0, 1.0)

    def setup_ema(self):
        """Build ``net_g_ema`` when ``train.ema_decay > 0`` (from ``params_ema`` of the pretrained file if any)."""
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay <= 0:
            return
        get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            self.model_ema(0)
        self.net_g_ema.eval()

    @torch.no_grad()
    def model_ema(self, decay=0.999):
        net_g = self.get_bare_model(self.net_g)
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in net_g.named_parameters():
            if decay == 0 or param.requires_grad:
                ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)

    def setup_code_losses(self):
        """``train.feat_opt`` (Eq. 6, default weights 1/1), ``train.ce_opt`` (index bottlenecks) and
        ``train.codebook_opt`` (a baseline's own encoder-feature loss, replacing Eq. 6's encoder term)."""
        train_opt = self.opt['train']
        self.cri_feat = build_loss(train_opt.get('feat_opt') or {'type': 'FeatureMatchingLoss'}).to(self.device)
        self.cri_ce = build_loss(train_opt['ce_opt']).to(self.device) if train_opt.get('ce_opt') else None
        self.cri_codebook = (build_loss(train_opt['codebook_opt']).to(self.device)
                             if train_opt.get('codebook_opt') else None)

    def code_losses(self, aux, z_hat, idx_gt, loss_dict):
        """Losses on the bottleneck auxiliaries given the teacher's z_hat (B, C, h, w) and indices (B, h, w).

        Feature transformers: ``l_feat_match`` = ||z_hat - z_t||^2; every bottleneck: the encoder term
        ``l_feat_lq`` (Eq. 6's ||z_l - sg(z_hat)||^2, or ``codebook_opt``); bottlenecks with logits: ``l_ce`` and
        the logged ``code_acc``. Adds to ``loss_dict``; returns the sum.
        """
        bottleneck = self.get_bare_model(self.net_g).bottleneck
        feat = aux['feat'] if isinstance(bottleneck, TransformerBottleneck) else None
        l_match, l_lq = self.cri_feat(feat, None if self.cri_codebook else aux['lq_feat'], z_hat)
        if self.cri_codebook is not None:
            l_lq = self.cri_codebook(aux['lq_feat'], z_hat)
        total = 0
        if l_match is not None:
            loss_dict['l_feat_match'] = l_match
            total = total + l_match
        if l_lq is not None:
            loss_dict['l_feat_lq'] = l_lq
            total = total + l_lq
        if 'logits' in aux:
            if self.cri_ce is not None:
                loss_dict['l_ce'] = self.cri_ce(aux['logits'], idx_gt)
                total = total + loss_dict['l_ce']
            loss_dict['code_acc'] = (aux['logits'].detach().argmax(-1) == idx_gt.flatten(1)).float().mean()
        return total

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        key = (self.opt.get('val') or {}).get('key_metric')
        if not key or not self.is_train or not hasattr(self, 'best_metric_results'):
            return
        name = dataloader.dataset.opt['name']
        if key not in self.best_metric_results.get(name, {}):
            raise ValueError(f'val.key_metric: {key!r} is not one of val.metrics ({sorted(self.metric_results)})')
        if self.best_metric_results[name][key]['iter'] == current_iter:
            get_root_logger().info(f'New best {key} on {name} at iter {current_iter}: saving net_*_best.pth')
            self.save_network(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g, 'net_g', 'best',
                              param_key='params_ema' if hasattr(self, 'net_g_ema') else 'params')
            if hasattr(self, 'net_d'):
                self.save_network(self.net_d, 'net_d', 'best')

    def setup_image_losses(self):
        """``pixel_opt``, ``perceptual_opt`` and ``gan_opt`` of ``train`` (each optional)."""
        train_opt = self.opt['train']
        for attr, key in (('cri_pix', 'pixel_opt'), ('cri_perceptual', 'perceptual_opt'), ('cri_gan', 'gan_opt')):
            setattr(self, attr, build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None)

    def image_losses(self, output, loss_dict, pix_key='l_pix', percep_key='l_percep'):
        """Pixel + perceptual loss of ``output`` against ``self.gt``; adds to ``loss_dict``, returns the sum."""
        total = 0
        if self.cri_pix is not None:
            loss_dict[pix_key] = self.cri_pix(output, self.gt)
            total = total + loss_dict[pix_key]
        if self.cri_perceptual is not None:
            loss_dict[percep_key] = self.cri_perceptual(output, self.gt)
            total = total + loss_dict[percep_key]
        return total

    def setup_discriminator(self):
        """Build ``net_d`` from ``network_d`` (weights from ``path.pretrain_network_d`` with ``param_key_d``)."""
        self.net_d = self.model_to_device(build_network(self.opt['network_d']))
        self.print_network(self.net_d)
        load_path = self.opt['path'].get('pretrain_network_d')
        if load_path is not None:
            self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True),
                              self.opt['path'].get('param_key_d', 'params'))
        self.net_d.train()

    def setup_optimizers(self):
        """``optim_g`` over the trained parameters of net_g; ``optim_d`` for net_d when there is one."""
        train_opt = self.opt['train']
        opt_g = dict(train_opt['optim_g'])
        params_g = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = self.get_optimizer(opt_g.pop('type'), params_g, **opt_g)
        self.optimizers = [self.optimizer_g]
        if hasattr(self, 'net_d'):
            opt_d = dict(train_opt['optim_d'])
            self.optimizer_d = self.get_optimizer(opt_d.pop('type'), self.net_d.parameters(), **opt_d)
            self.optimizers.append(self.optimizer_d)

    @staticmethod
    def adaptive_gan_weight(recon_loss, gan_loss, last_layer, max_weight=1.0):
        """VQGAN's adaptive weight ``clamp(|grad recon| / (|grad gan| + 1e-4), 0, max_weight)`` at ``last_layer``."""
        rec_grad = torch.autograd.grad(recon_loss, last_layer, retain_graph=True)[0]
        gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
        return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()

    def set_d_trainable(self, flag):
        for p in self.net_d.parameters():
            p.requires_grad = flag

    def optimize_discriminator(self, fake, loss_dict):
        """One discriminator step (``cri_gan`` real vs. ``fake.detach()``); logs into ``loss_dict``."""
        self.set_d_trainable(True)
        self.optimizer_d.zero_grad()
        real_pred, fake_pred = self.net_d(self.gt), self.net_d(fake.detach())
        l_d_real = self.cri_gan(real_pred, True, is_disc=True)
        l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
        (l_d_real + l_d_fake).backward()
        self.optimizer_d.step()
        loss_dict['l_d_real'], loss_dict['l_d_fake'] = l_d_real, l_d_fake
        loss_dict['out_d_real'], loss_dict['out_d_fake'] = real_pred.detach().mean(), fake_pred.detach().mean()

    def save(self, epoch, current_iter):
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        if hasattr(self, 'net_d'):
            self.save_network(self.net_d, 'net_d', current_iter)
        self.save_training_state(epoch, current_iter)

    @contextmanager
    def evaluation_net(self):
        """The network to evaluate (EMA if any), in eval mode and without autograd for the block."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                yield net
        finally:
            net.train(was_training)

    def get_current_visuals(self):
        """lq / result / gt mapped from ``image_range`` to [0, 1] (BasicSR's validation clamps to [0, 1])."""
        low, high = self.image_range

        def to01(t):
            return (t.detach().cpu() - low) / (high - low)

        out = OrderedDict(lq=to01(self.lq), result=to01(self.output))
        if hasattr(self, 'gt'):
            out['gt'] = to01(self.gt)
        return out
