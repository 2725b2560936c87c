"""Training-model bases shared by every stage of every baseline (not registered).

* :class:`SinCABaseModel` — what any stage needs: EMA of the trained parameters, optional image losses, a
  discriminator with its step, the generator/discriminator step skeleton, ``net_g_best`` on validation, visuals
  in [0, 1] from the network's ``image_range``.

A stage implements :meth:`SinCABaseModel.generator_loss` (its forward and loss terms) and, if it needs more,
:meth:`SinCABaseModel.setup_stage`; the rest is written here once. Restoration stages build on
:class:`~basicsr_sinca.models.restoration_model.VQRestorationModel` (teacher and code losses).
"""
from collections import OrderedDict
from contextlib import contextmanager
from os import path as osp

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.losses.gan_loss import r1_penalty
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
from basicsr_sinca.utils.file_io import atomic_torch_save
from basicsr_sinca.utils.options import OptionError
from basicsr_sinca.utils.rng import get_rng_state, preserved_rng, set_rng_state

__all__ = ['SinCABaseModel', 'NamedDiscriminators', 'RENAMED_OPTIONS', 'GAN_BRANCH_DEFAULTS', 'check_renamed_options']

# option keys of earlier versions -> their one name now (a stale key is an error, never silently ignored)
RENAMED_OPTIONS = {
    ('network_vqgan', ): 'network_hq',
    ('path', 'pretrain_network_vqgan'): 'path.pretrain_network_hq',
    ('path', 'param_key_vqgan'): 'path.param_key_hq',
    ('train', 'net_d_init_iters'): 'train.net_d_start_iter',
}


# per-discriminator settings of ``train.gan_branches`` (see SinCABaseModel)
GAN_BRANCH_DEFAULTS = {'output': 'image', 'start_iter': None, 'adaptive_weight': False, 'r1_weight': 0.0,
                       'r1_every': 16}


class NamedDiscriminators(nn.ModuleDict):
    """Several discriminators by name (state-dict keys ``<name>.*``); ``forward(x, name)`` runs one."""

    def forward(self, x, branch):
        return self[branch](x)


def check_renamed_options(opt):
    """Raise :class:`OptionError` for a key listed in :data:`RENAMED_OPTIONS`, naming its new name."""
    for keys, new in RENAMED_OPTIONS.items():
        node = opt
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            raise OptionError(f"{'.'.join(keys)}: renamed to {new}")


class SinCABaseModel(SRModel):
    """SRModel plus the training skeleton every stage of this package shares.

    Options (``train``): ``ema_decay``; ``pixel_opt`` / ``perceptual_opt`` / ``gan_opt`` (each optional);
    ``net_d_start_iter`` (the GAN terms and the discriminator start after it; default
    ``default_net_d_start_iter`` of the model, 0 here) and ``net_d_iters``
    (a discriminator step every n iterations; default 1); ``optim_g`` (over the trained parameters of net_g) and
    ``optim_d``. ``network_d`` builds the discriminator (weights from ``path.pretrain_network_d``,
    ``param_key_d``); ``train.param_groups`` (a list of ``{match: [name parts], <optimizer args>}``) gives the
    parameters whose name contains one of the parts their own optimizer arguments (e.g. VQFR's main branch at
    another learning rate and betas); the first matching group counts, the rest keep ``optim_g``'s.

    Several discriminators: ``network_d: {name: arch options, ...}`` builds :class:`NamedDiscriminators`,
    ``gan_opt`` is then one loss for all or ``{name: loss options}``, and ``train.gan_branches: {name: {...}}``
    sets, per discriminator, ``output`` (what it judges: ``image`` or a key of the network's decoding context,
    e.g. ``texture_dec``), ``start_iter`` (default ``net_d_start_iter``), ``adaptive_weight`` (VQGAN's adaptive
    weight at that output's last layer), ``r1_weight`` / ``r1_every`` (StyleGAN2's lazy R1 penalty on real
    images, ``r1_weight / 2 · R1 · r1_every`` every ``r1_every`` iterations). The discriminator optimizer's
    gradients are zeroed before every step (VQFR's StyleGAN2 step accumulated them across iterations; not
    reproduced). ``val.key_metric``: after a validation that improves it, ``net_g_best.pth`` (and
    ``net_d_best.pth``) are saved.

    EMA averages only the parameters being trained: frozen modules (codebook, decoder) stay bit-identical to the
    prior in ``params_ema`` too (``x·d + x·(1-d)`` is not always ``x`` in floating point).

    Whichever entry point runs it (this package's or BasicSR's own): checkpoints and training states are written
    atomically; training states also hold the random generators and the modules' training-time state
    (``training_state_dict``), restored on resume; validation leaves the generators untouched; distributed runs
    without CUDA get DDP without ``device_ids``.
    """

    default_net_d_start_iter = 0

    def __init__(self, opt):
        check_renamed_options(opt)
        super().__init__(opt)

    @property
    def image_range(self):
        """The range of the network's images (its ``image_range`` attribute)."""
        return self.get_bare_model(self.net_g).image_range

    # ----------------------------------------------------------------------------------------------- set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        self.setup_stage()
        self.setup_ema()
        self.setup_image_losses()
        self.net_d_start_iter = int(train_opt.get('net_d_start_iter', self.default_net_d_start_iter))
        self.net_d_iters = int(train_opt.get('net_d_iters', 1))
        if self.opt.get('network_d'):
            self.setup_discriminator()
        self.setup_optimizers()
        self.setup_schedulers()

    def setup_stage(self):
        """Hook: what a stage sets up besides EMA, image losses, discriminator and optimizers; runs first, so
        weights it loads into net_g also start the EMA copy."""

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

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's ``load_network`` through the package's one loader: ``weights_only`` (no code in the file runs),
        BasicSR-style, raw and PyTorch Lightning files, ``param_key`` falling back to the other BasicSR key, and a
        one-line report (an error when ``strict``; keys of another shape are never loaded)."""
        net = self.get_bare_model(net)
        state_dict, used = read_state_dict(load_path, param_key, ('params', 'params_ema', 'state_dict'))
        get_root_logger().info(f'Loading {type(net).__name__} model from {load_path}, with param key: [{used}].')
        report = load_state_dict_report(net, state_dict, strict=strict, source=f'{load_path} [{used}]')
        if report:
            get_root_logger().warning(report)

    def setup_image_losses(self):
        """``pixel_opt``, ``perceptual_opt``, ``style_opt`` and ``gan_opt`` of ``train`` (each optional)."""
        train_opt = self.opt['train']
        for attr, key in (('cri_pix', 'pixel_opt'), ('cri_perceptual', 'perceptual_opt'), ('cri_style', 'style_opt')):
            setattr(self, attr, build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None)
        gan_opt = train_opt.get('gan_opt')
        self.cri_gan, self.cri_gan_branches, self.gan_branches = None, {}, {}
        if gan_opt and 'type' in gan_opt:
            self.cri_gan = build_loss(gan_opt).to(self.device)
        elif gan_opt:  # one loss per named discriminator
            self.cri_gan_branches = {b: build_loss(o).to(self.device) for b, o in gan_opt.items()}

    @property
    def has_gan(self):
        return self.cri_gan is not None or bool(self.cri_gan_branches)

    def gan_loss(self, branch=None):
        """The GAN loss of discriminator ``branch`` (its own ``gan_opt`` entry, else the common one)."""
        return self.cri_gan_branches.get(branch, self.cri_gan)

    def build_discriminator(self):
        """``network_d``: one arch (``type: ...``) or :class:`NamedDiscriminators` from ``{name: arch options}``."""
        opt = self.opt['network_d']
        if 'type' in opt:
            return build_network(opt)
        return NamedDiscriminators({name: build_network(o) for name, o in opt.items()})

    def setup_gan_branches(self, names):
        """Check ``gan_opt`` / ``train.gan_branches`` against the discriminator names; fill the defaults."""
        train_opt = self.opt['train']
        if self.cri_gan_branches and set(self.cri_gan_branches) != set(names):
            raise OptionError(f'train.gan_opt: losses for {sorted(self.cri_gan_branches)} but network_d names '
                              f'{sorted(names)}')
        branches = train_opt.get('gan_branches') or {}
        if branches and not names:
            raise OptionError('train.gan_branches: needs several discriminators (network_d: {name: arch options})')
        for name, settings in branches.items():
            if name not in names:
                raise OptionError(f'train.gan_branches.{name}: no such discriminator in network_d ({sorted(names)})')
            unknown = set(settings or {}) - set(GAN_BRANCH_DEFAULTS)
            if unknown:
                raise OptionError(f'train.gan_branches.{name}: unknown keys {sorted(unknown)}; expected '
                                  f'{sorted(GAN_BRANCH_DEFAULTS)}')
        self.gan_branches = {name: dict(GAN_BRANCH_DEFAULTS, **(branches.get(name) or {})) for name in names}
        for settings in self.gan_branches.values():
            if settings['start_iter'] is None:
                settings['start_iter'] = self.net_d_start_iter

    def setup_discriminator(self):
        """Build ``net_d`` (:meth:`build_discriminator`; weights from ``path.pretrain_network_d`` with
        ``param_key_d``)."""
        net_d = self.build_discriminator()
        self.setup_gan_branches(list(net_d.keys()) if isinstance(net_d, NamedDiscriminators) and
                                'type' not in self.opt['network_d'] else [])
        self.net_d = self.model_to_device(net_d)
        self.print_network(self.net_d)
        load_path = self.opt['path'].get('pretrain_network_d')
        if load_path is not None:
            self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True),
                              self.opt['path'].get('param_key_d', 'params'))
        self.net_d.train()

    def setup_optimizers(self):
        """``optim_g`` over the trained parameters of net_g (``train.lr_multipliers: {name part: factor}`` scales the
        learning rate of the parameters whose name contains the part; the first match counts); ``optim_d`` for net_d
        when there is one."""
        train_opt = self.opt['train']
        opt_g = dict(train_opt['optim_g'])
        params_g = [(n, p) for n, p in self.net_g.named_parameters() if p.requires_grad]
        multipliers = train_opt.get('lr_multipliers') or {}
        if multipliers and train_opt.get('param_groups'):
            raise OptionError('train.lr_multipliers and train.param_groups: give one of them')
        if train_opt.get('param_groups'):
            params = self.parameter_groups(params_g, train_opt['param_groups'])
        elif multipliers:  # parameter groups by name, e.g. RestoreFormer's decoder / attention at 10x
            groups = {}
            for name, p in params_g:
                factor = next((f for key, f in multipliers.items() if key in name), 1.0)
                groups.setdefault(factor, []).append(p)
            params = [{'params': ps, 'lr': opt_g['lr'] * f} for f, ps in sorted(groups.items())]
        else:
            params = [p for _, p in params_g]
        self.optimizer_g = self.get_optimizer(opt_g.pop('type'), params, **opt_g)
        self.optimizers = [self.optimizer_g]
        if hasattr(self, 'net_d'):
            opt_d = dict(train_opt['optim_d'])
            self.optimizer_d = self.get_optimizer(opt_d.pop('type'), self.net_d.parameters(), **opt_d)
            self.optimizers.append(self.optimizer_d)

    @staticmethod
    def parameter_groups(named_params, groups_opt):
        """``train.param_groups`` -> optimizer parameter groups; a group that matches no trained parameter is an
        error (a misspelt name part would otherwise silently train at the default rate)."""
        buckets, rest = [[] for _ in groups_opt], []
        for i, group in enumerate(groups_opt):
            if not isinstance(group, dict) or not group.get('match'):
                raise OptionError(f'train.param_groups[{i}]: expected {{match: [name parts], <optimizer args>}}')
        for name, p in named_params:
            i = next((i for i, g in enumerate(groups_opt) if any(part in name for part in g['match'])), None)
            (rest if i is None else buckets[i]).append(p)
        params = [{'params': rest}] if rest else []
        for i, (group, ps) in enumerate(zip(groups_opt, buckets)):
            if not ps:
                raise OptionError(f"train.param_groups[{i}].match: {group['match']} matches no trained parameter")
            params.append(dict({k: v for k, v in group.items() if k != 'match'}, params=ps))
        return params

    # ------------------------------------------------------------------------------------------ one step
    def optimize_parameters(self, current_iter):
        """Generator step (:meth:`generator_loss`), EMA, then a discriminator step when the generator's GAN term
        was used (:meth:`gan_generator_term` queues it) and ``net_d_iters`` says so."""
        self.d_steps, self.current_iter = [], current_iter
        if hasattr(self, 'net_d'):
            self.set_d_trainable(False)
        self.optimizer_g.zero_grad()
        loss_dict = OrderedDict()
        self.generator_loss(current_iter, loss_dict).backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.after_generator_step(current_iter, loss_dict)
        if self.d_steps and current_iter % self.net_d_iters == 0:
            self.optimize_discriminator(loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def generator_loss(self, current_iter, loss_dict):
        """Hook: the stage's forward and generator loss terms; logs into ``loss_dict``, returns the total."""
        raise NotImplementedError

    def after_generator_step(self, current_iter, loss_dict):
        """Hook: runs after the generator's optimizer and EMA step."""

    def image_losses(self, output, loss_dict, pix_key='l_pix', percep_key='l_percep', target=None):
        """Pixel + perceptual (+ style) loss of ``output`` against ``target`` (default ``self.gt``); adds to
        ``loss_dict``, returns the sum."""
        target = self.gt if target is None else target
        total = 0
        if self.cri_pix is not None:
            loss_dict[pix_key] = self.cri_pix(output, target)
            total = total + loss_dict[pix_key]
        if self.cri_perceptual is not None:
            loss_dict[percep_key] = self.cri_perceptual(output, target)
            total = total + loss_dict[percep_key]
        if self.cri_style is not None:
            loss_dict['l_style'] = self.cri_style(output, target)
            total = total + loss_dict['l_style']
        return total

    def gan_active(self, current_iter, branch=None):
        start = self.gan_branches[branch]['start_iter'] if branch in self.gan_branches else self.net_d_start_iter
        return self.gan_loss(branch) is not None and hasattr(self, 'net_d') and current_iter > start

    def gan_generator_term(self, current_iter, fake, loss_dict, recon=None, last_layer=None, scale=1.0, real=None,
                           branch=None, suffix=''):
        """The generator's GAN term on ``fake`` (0 before ``net_d_start_iter`` or without ``gan_opt``).

        With ``last_layer`` (and a tensor ``recon``) the term is weighted by VQGAN's adaptive weight at that layer
        (clamped to 1) times ``scale``, else by ``scale``; the weight is logged as ``d_weight``. Queues this
        iteration's discriminator step on (``real``, default ``self.gt``; ``fake``). ``branch`` selects one of
        several discriminators (``net_d(x, branch)``); ``suffix`` is appended to the logged names.
        """
        if not self.gan_active(current_iter, branch):
            return 0
        l_g_gan = self.gan_loss(branch)(self.discriminate(fake, branch), True, is_disc=False)
        weight = scale
        if last_layer is not None:
            if torch.is_tensor(recon):
                weight = self.adaptive_gan_weight(recon, l_g_gan, last_layer) * scale
            loss_dict['d_weight' + suffix] = torch.as_tensor(weight, device=self.device)
        loss_dict['l_g_gan' + suffix] = weight * l_g_gan
        self.d_steps.append((self.gt if real is None else real, fake, branch, suffix))
        return loss_dict['l_g_gan' + suffix]

    def discriminate(self, x, branch=None):
        return self.net_d(x) if branch is None else self.net_d(x, branch)

    @staticmethod
    def adaptive_gan_weight(recon_loss, gan_loss, last_layer, max_weight=1.0):
        """VQGAN's adaptive weight ``clamp(|grad recon| / (|grad gan| + 1e-4), 0, max_weight)`` at ``last_layer``."""
        rec_grad = torch.autograd.grad(recon_loss, last_layer, retain_graph=True)[0]
        gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
        return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()

    def set_d_trainable(self, flag):
        for p in self.net_d.parameters():
            p.requires_grad = flag

    def optimize_discriminator(self, loss_dict):
        """One discriminator step on the queued (real, fake) pairs (``cri_gan``; fakes detached); logs into
        ``loss_dict``."""
        self.set_d_trainable(True)
        self.optimizer_d.zero_grad()
        total = 0
        for real, fake, branch, suffix in self.d_steps:
            cri = self.gan_loss(branch)
            real_pred, fake_pred = self.discriminate(real, branch), self.discriminate(fake.detach(), branch)
            l_d_real = cri(real_pred, True, is_disc=True)
            l_d_fake = cri(fake_pred, False, is_disc=True)
            total = total + l_d_real + l_d_fake
            loss_dict['l_d_real' + suffix], loss_dict['l_d_fake' + suffix] = l_d_real, l_d_fake
            loss_dict['out_d_real' + suffix] = real_pred.detach().mean()
            loss_dict['out_d_fake' + suffix] = fake_pred.detach().mean()
            settings = self.gan_branches.get(branch) or {}
            if settings.get('r1_weight') and self.current_iter % settings['r1_every'] == 0:
                real_img = real.detach().requires_grad_(True)
                l_r1 = r1_penalty(self.discriminate(real_img, branch), real_img)
                loss_dict['l_d_r1' + suffix] = settings['r1_weight'] / 2 * l_r1 * settings['r1_every']
                total = total + loss_dict['l_d_r1' + suffix]
        total.backward()
        self.optimizer_d.step()

    # ---------------------------------------------------------------------------- validation and saving
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        key = (self.opt.get('val') or {}).get('key_metric')
        if not key or not self.is_train or not hasattr(self, 'best_metric_results'):
            return
        name = dataloader.dataset.opt['name']
        if key not in self.best_metric_results.get(name, {}):
            raise OptionError(f'val.key_metric: {key!r} is not one of val.metrics ({sorted(self.metric_results)})')
        if self.best_metric_results[name][key]['iter'] == current_iter:
            get_root_logger().info(f'New best {key} on {name} at iter {current_iter}: saving net_*_best.pth')
            self.save_network(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g, 'net_g', 'best',
                              param_key='params_ema' if hasattr(self, 'net_g_ema') else 'params')
            if hasattr(self, 'net_d'):
                self.save_network(self.net_d, 'net_d', 'best')

    # ------------------------------------------------------ BasicSR fixes that hold under any entry point
    def model_to_device(self, net):
        """BasicSR's placement; a distributed run without CUDA gets DDP without ``device_ids`` (BasicSR passes the
        current CUDA device, which does not exist on a CPU machine)."""
        if self.opt['dist'] and not torch.cuda.is_available():
            return DistributedDataParallel(net.to(self.device),
                                           find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """``{net_label}_{iter}.pth`` (``latest`` for -1) in BasicSR's layout ``{param_key: state_dict}``, written
        atomically: a kill during the save never leaves a truncated file for ``--auto_resume`` to pick up."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state_dict.items()}
        tag = 'latest' if current_iter == -1 else current_iter
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{tag}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        """``{iter}.state`` (epoch, iteration, optimizer and scheduler states, and the random generators' states so
        that a resumed run draws what the uninterrupted one would), written atomically; nothing for the final
        save (-1)."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'rng': get_rng_state(),
                 'module_states': self.module_training_states()}
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        """Load optimizer and scheduler states (optimizer states follow their parameters' device, so a state read
        onto the CPU resumes on either) and, in a single-process run, the random generators' states; a count that
        differs from this model's is an error naming both. Call it after the model and data loaders are built
        (building draws random numbers)."""
        for what, saved, mine in (('optimizers', resume_state['optimizers'], self.optimizers),
                                  ('schedulers', resume_state['schedulers'], self.schedulers)):
            if len(saved) != len(mine):
                raise ValueError(f'path.resume_state: the state holds {len(saved)} {what}, this model has {len(mine)} '
                                 '(was it saved by another model_type or stage?)')
        for optimizer, state in zip(self.optimizers, resume_state['optimizers']):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, resume_state['schedulers']):
            scheduler.load_state_dict(state)
        self.load_module_training_states(resume_state.get('module_states', {}))
        if 'rng' not in resume_state:  # written by BasicSR or an earlier version
            get_root_logger().warning('Resume: the training state holds no random generator states; the resumed run '
                                      'draws other random numbers than an uninterrupted one would.')
        elif self.opt.get('world_size', 1) > 1:  # the state holds rank 0's generators only
            get_root_logger().warning('Resume: random generator states are restored in single-process runs only.')
        else:
            set_rng_state(resume_state['rng'])

    def _networks(self):
        return {label: self.get_bare_model(getattr(self, label)) for label in ('net_g', 'net_d')
                if hasattr(self, label)}

    def module_training_states(self):
        """What submodules keep for training outside their state dict (``training_state_dict()``, e.g. VQFR v1's
        k-means reservoir and step count), as ``{'net_g.<module name>': state}``: part of the training state, so
        that a resumed run continues the same schedule."""
        return {f'{label}.{name}': module.training_state_dict() for label, net in self._networks().items()
                for name, module in net.named_modules() if hasattr(module, 'training_state_dict')}

    def load_module_training_states(self, states):
        """Give each submodule its part of :meth:`module_training_states` (``load_training_state_dict``)."""
        modules = {f'{label}.{name}': module for label, net in self._networks().items()
                   for name, module in net.named_modules() if hasattr(module, 'load_training_state_dict')}
        unknown = sorted(set(states) - set(modules))
        if unknown:
            raise ValueError(f'path.resume_state: training state of modules this network does not have: {unknown}')
        for name, state in states.items():
            modules[name].load_training_state_dict(state)

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, without moving the random generators: training draws the same random numbers
        whether or not (and how often) it validates, which exact resume relies on."""
        with preserved_rng():
            super().validation(dataloader, current_iter, tb_logger, save_img)

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
        """The bare network to evaluate (EMA if any), in eval mode and without autograd for the block."""
        net = self.get_bare_model(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g)
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
