"""Compatibility layer between basicsr_sinca and BasicSR 1.4.2 / basicsr-fixed.

Everything that changes BasicSR's behaviour lives in this one module:

1. :func:`apply_import_shims` (run on ``import basicsr_sinca``): the 1.4.2 release imports
   ``torchvision.transforms.functional_tensor``, which torchvision >= 0.17 removed. When (and only
   when) that module is missing it is aliased to ``torchvision.transforms.functional``.
2. :func:`patch_basicsr` (run by our ``train.py`` / ``test.py`` entry points, idempotent):

   * ``load_resume_state``: upstream maps the state to ``torch.cuda.current_device()`` (crashes without a
     GPU) and looks for ``--auto_resume`` states relative to the CWD instead of the experiment folder.
     Ours loads onto the current CUDA device or the CPU, searches ``path.training_states`` and skips an
     unreadable newest state with a warning.
   * Exact resume of the data order: upstream restarts the saved epoch from its first batch, so a run
     resumed after a checkpoint at the end of an epoch replays that epoch. The train sampler is replaced
     by a subclass that skips the samples already consumed in the resumed epoch.
   * Epoch count: upstream counts ``ceil(samples / batch)`` iterations per epoch while the train loader drops
     the last incomplete batch, so small datasets stop before ``total_iter`` (e.g. 6 of 10). The count is
     recomputed from the full batches; a dataset smaller than one batch is an error.
   * ``init_dist`` (CPU only): upstream always calls ``torch.cuda.set_device`` and defaults to NCCL; without
     CUDA we initialise the process group with gloo.
   * ``BaseModel.model_to_device`` (CPU only): DDP is built without ``device_ids``.
   * ``BaseModel.save_network`` / ``save_training_state``: written atomically (temporary file + rename)
     so a kill during a save never leaves a truncated ``net_*.pth`` or ``*.state`` behind.
"""
import importlib
import math
import os
import sys
import warnings
from os import path as osp

__all__ = ['apply_import_shims', 'patch_basicsr']

_PATCHED = False
# (epoch, iter) of the state being resumed; set by the resume loader, read once by the dataloader factory
_pending_resume = None


def apply_import_shims():
    """Alias ``torchvision.transforms.functional_tensor`` if this torchvision lacks it (basicsr 1.4.2)."""
    try:
        importlib.import_module('torchvision.transforms.functional_tensor')
    except ImportError:
        import torchvision.transforms.functional as tv_functional
        sys.modules.setdefault('torchvision.transforms.functional_tensor', tv_functional)


def _map_location():
    import torch
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


def _load_resume_state(opt):
    """Replacement for ``basicsr.train.load_resume_state`` (see module docstring)."""
    import torch
    from basicsr.utils import check_resume, get_root_logger, scandir

    global _pending_resume
    _pending_resume = None
    candidates = []
    if opt['auto_resume']:
        state_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            names = [v for v in scandir(state_dir, suffix='.state', recursive=False) if v[:-6].isdigit()]
            candidates = [osp.join(state_dir, v) for v in sorted(names, key=lambda v: -int(v[:-6]))]
    elif opt['path'].get('resume_state'):
        candidates = [opt['path']['resume_state']]

    for state_path in candidates:
        try:
            resume_state = torch.load(state_path, map_location=_map_location())
        except Exception as err:  # noqa: BLE001 - any unreadable state is skipped, the error is reported
            if not opt['auto_resume']:
                raise
            warnings.warn(f'auto_resume: skipping unreadable training state {state_path}: {err}')
            continue
        opt['path']['resume_state'] = state_path
        check_resume(opt, resume_state['iter'])
        _pending_resume = (resume_state['epoch'], resume_state['iter'])
        return resume_state
    if candidates:
        get_root_logger().warning('auto_resume: no readable training state, starting from scratch.')
    return None


def _resumable_sampler_class():
    from basicsr.data.data_sampler import EnlargedSampler

    class ResumableEnlargedSampler(EnlargedSampler):
        """EnlargedSampler that can drop the samples already consumed in one epoch (exact resume)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.skip_epoch = None
            self.skip_samples = 0

        def skip(self, epoch, num_samples):
            self.skip_epoch, self.skip_samples = epoch, int(num_samples)

        def __iter__(self):
            indices = list(super().__iter__())
            if self.epoch == self.skip_epoch:
                indices = indices[self.skip_samples:]
            return iter(indices)

        def __len__(self):
            if self.epoch == self.skip_epoch:
                return self.num_samples - self.skip_samples
            return self.num_samples

    return ResumableEnlargedSampler


def _wrap_create_train_val_dataloader(original):

    def create_train_val_dataloader(opt, logger):
        global _pending_resume
        result = list(original(opt, logger))
        train_loader, train_sampler = result[0], result[1]
        if train_loader is not None and hasattr(train_sampler, 'num_samples'):
            full_batches = train_sampler.num_samples // train_loader.batch_size  # the loader drops the last one
            if full_batches == 0:
                raise ValueError(f'datasets.train: {train_sampler.num_samples} samples per process is less than one '
                                 f'batch of {train_loader.batch_size}; raise dataset_enlarge_ratio or lower '
                                 'batch_size_per_gpu')
            total_epochs = math.ceil(result[4] / full_batches)
            if total_epochs != result[3]:
                logger.info(f'Epoch count corrected to {total_epochs} ({full_batches} full batches per epoch).')
                result[3] = total_epochs
        if _pending_resume is not None and train_loader is not None and hasattr(train_sampler, 'skip'):
            epoch, current_iter = _pending_resume
            batch = train_loader.batch_size
            iters_per_epoch = train_sampler.num_samples // batch  # the train loader drops the last batch
            consumed = current_iter - epoch * iters_per_epoch
            if iters_per_epoch > 0 and 0 <= consumed <= iters_per_epoch:
                train_sampler.skip(epoch, consumed * batch)
                logger.info(f'Resume: skipping the {consumed} batches of epoch {epoch} already trained on.')
            else:
                logger.warning(f'Resume: iteration {current_iter} does not fall in epoch {epoch} with '
                               f'{iters_per_epoch} iterations per epoch (batch size or data changed?); '
                               'the epoch restarts from its first batch.')
        _pending_resume = None
        return tuple(result)

    return create_train_val_dataloader


def _init_dist_cpu_aware(original):

    def init_dist(launcher, backend='nccl', **kwargs):
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
        if torch.cuda.is_available():
            return original(launcher, backend=backend, **kwargs)
        if launcher not in ('pytorch', 'slurm'):
            raise ValueError(f'Invalid launcher type: {launcher}')
        if mp.get_start_method(allow_none=True) is None:
            mp.set_start_method('spawn')
        if launcher == 'slurm':  # torchrun sets these; slurm gives them under other names
            os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
            os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
            os.environ.setdefault('MASTER_PORT', str(kwargs.pop('port', None) or 29500))
            os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        kwargs.pop('port', None)
        dist.init_process_group(backend='gloo', **kwargs)

    return init_dist


def _model_to_device_cpu_aware(original):

    def model_to_device(self, net):
        import torch
        from torch.nn.parallel import DistributedDataParallel
        if torch.cuda.is_available() or not self.opt['dist']:
            return original(self, net)
        net = net.to(self.device)
        return DistributedDataParallel(net, find_unused_parameters=self.opt.get('find_unused_parameters', False))

    return model_to_device


def _atomic_save_network(self, net, net_label, current_iter, param_key='params'):
    """Save network(s) as ``{net_label}_{iter}.pth`` atomically (BasicSR layout: ``{param_key: state_dict}``)."""
    from .utils.file_io import atomic_torch_save
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


def _atomic_save_training_state(self, epoch, current_iter):
    """Save optimizer/scheduler states as ``{iter}.state`` atomically (nothing for the final -1 save)."""
    from .utils.file_io import atomic_torch_save
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
    }
    atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def patch_basicsr():
    """Install the runtime fixes described in the module docstring. Safe to call more than once."""
    global _PATCHED
    if _PATCHED:
        return
    import basicsr.train as bsr_train
    import basicsr.utils.options as bsr_options
    from basicsr.models.base_model import BaseModel
    from basicsr.utils.dist_util import master_only

    bsr_train.load_resume_state = _load_resume_state
    bsr_train.EnlargedSampler = _resumable_sampler_class()
    bsr_train.create_train_val_dataloader = _wrap_create_train_val_dataloader(bsr_train.create_train_val_dataloader)
    bsr_options.init_dist = _init_dist_cpu_aware(bsr_options.init_dist)
    BaseModel.model_to_device = _model_to_device_cpu_aware(BaseModel.model_to_device)
    BaseModel.save_network = master_only(_atomic_save_network)
    BaseModel.save_training_state = master_only(_atomic_save_training_state)
    _PATCHED = True

