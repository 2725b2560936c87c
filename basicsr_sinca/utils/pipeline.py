"""The package's train and test pipelines: BasicSR's loop, driven by an options dict instead of ``sys.argv``.

BasicSR's ``train_pipeline(root_path)`` parses ``sys.argv`` itself and hard-codes four things that break on
a CPU machine or on exact resume; those are fixed here, in functions that take their inputs as arguments and
leave every BasicSR module untouched (nothing in ``basicsr.*`` is assigned to):

* :func:`init_dist`: BasicSR always calls ``torch.cuda.set_device`` (``ZeroDivisionError`` without a GPU) and
  defaults to NCCL; without CUDA this initialises the process group with gloo.
* :func:`load_resume_state`: BasicSR maps the state to ``torch.cuda.current_device()`` (crashes without a GPU)
  and looks for ``--auto_resume`` states relative to the working directory; here the state is loaded onto the
  current CUDA device or the CPU (``weights_only``), ``path.training_states`` is searched, and an unreadable
  newest state is skipped with a warning.
* :class:`ResumableEnlargedSampler`: BasicSR restarts the resumed epoch from its first batch, so a run resumed
  mid-epoch trains on some batches twice; the sampler skips what the resumed epoch already consumed.
* :func:`create_train_val_dataloader`: BasicSR counts ``ceil(samples / batch)`` iterations per epoch while its
  train loader drops the last incomplete batch, so small datasets stop before ``total_iter``; the epoch count
  is computed from full batches, and a dataset smaller than one batch is an error.

What belongs to a model (atomic checkpoint writes, DDP without ``device_ids`` on CPU) lives in
:class:`basicsr_sinca.models.base.SinCABaseModel`, so it also holds under BasicSR's own entry point. Each fix
is offered upstream as a patch in ``upstream/basicsr/``.
"""
import datetime
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from os import path as osp

import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.utils import (AvgTimer, MessageLogger, check_resume, get_env_info, get_root_logger, get_time_str,
                           make_exp_dirs, mkdir_and_rename, scandir, set_random_seed)
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.options import dict2str

from basicsr_sinca.utils.checkpoint import load_untrusted
from basicsr_sinca.utils.file_io import atomic_open, remove_stale_temporaries

__all__ = ['init_dist', 'finalize_options', 'load_resume_state', 'ResumableEnlargedSampler',
           'create_train_val_dataloader', 'write_options_copy', 'train_pipeline', 'test_pipeline']


def init_dist(launcher, backend='nccl', **kwargs):
    """Initialise ``torch.distributed`` for ``launcher`` (``pytorch``: torchrun's environment; ``slurm``).

    With CUDA this is BasicSR's ``init_dist``; without it the gloo backend is used and no CUDA device is set.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if torch.cuda.is_available():
        from basicsr.utils.dist_util import init_dist as basicsr_init_dist
        return basicsr_init_dist(launcher, backend=backend, **kwargs)
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f'--launcher: expected pytorch or slurm for a distributed run, got {launcher!r}')
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    port = kwargs.pop('port', None)
    if launcher == 'slurm':  # torchrun sets these; slurm gives them under other names
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('MASTER_PORT', str(port or 29500))
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    dist.init_process_group(backend='gloo', **kwargs)


def finalize_options(opt, root_path, is_train, launcher='none', auto_resume=False, debug=False):
    """Complete resolved options the way BasicSR's ``parse_options`` does, without reading ``sys.argv``.

    Sets ``dist`` / ``rank`` / ``world_size`` (initialising the process group), the random seed (a random one is
    drawn and recorded when ``manual_seed`` is absent), ``auto_resume``, ``is_train``, the ``debug_`` name
    prefix and debug frequencies, ``num_gpu: auto``, each dataset's ``phase`` and ``scale``, ``~`` in paths and
    the experiment (train) or results (test) folders under ``path.experiments_root`` / ``path.results_root``
    (default ``<root_path>/experiments`` / ``results``).

    Args:
        opt (dict): Resolved options (modified in place and returned).
        root_path (str): Folder that holds ``experiments/``, ``results/`` and ``tb_logger/``.
        is_train (bool): Train (True) or test options.
        launcher (str): ``none``, ``pytorch`` or ``slurm``.
        auto_resume (bool): Resume from the newest training state of this experiment.
        debug (bool): BasicSR's debug mode.

    Returns:
        dict: ``opt``.
    """
    if launcher == 'none':
        opt['dist'] = False
    else:
        opt['dist'] = True
        dist_params = (opt.get('dist_params') or {}) if launcher == 'slurm' else {}
        init_dist(launcher, **dist_params)
    opt['rank'], opt['world_size'] = get_dist_info()
    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])

    opt['auto_resume'] = bool(auto_resume)
    opt['is_train'] = is_train
    if debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()

    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]  # val_1, test_2, ... are phases val, test
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if isinstance(dataset.get(key), str):
                dataset[key] = osp.expanduser(dataset[key])
    path = opt['path'] = opt.get('path') or {}
    for key, value in path.items():
        if isinstance(value, str) and ('resume_state' in key or 'pretrain_network' in key):
            path[key] = osp.expanduser(value)

    if is_train:
        root = osp.join(path.get('experiments_root') or osp.join(root_path, 'experiments'), opt['name'])
        path.update(experiments_root=root, models=osp.join(root, 'models'),
                    training_states=osp.join(root, 'training_states'), log=root,
                    visualization=osp.join(root, 'visualization'))
        if 'debug' in opt['name']:
            if opt.get('val') is not None:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        root = osp.join(path.get('results_root') or osp.join(root_path, 'results'), opt['name'])
        path.update(results_root=root, log=root, visualization=osp.join(root, 'visualization'))
    return opt


def _network_files(opt, resume_iter):
    """``{path key: file}`` of the networks BasicSR's ``check_resume`` points at ``models/net_<x>_<iter>.pth``."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return {f'pretrain_{key}': osp.join(opt['path']['models'], f"net_{key.replace('network_', '')}_{resume_iter}.pth")
            for key in opt if key.startswith('network_') and key not in ignored}


def _unreadable_network(opt, resume_iter):
    """The first of this state's saved network files that exists but cannot be read, or None."""
    for path in _network_files(opt, resume_iter).values():
        if osp.isfile(path):
            try:
                load_untrusted(path)
            except Exception as err:  # noqa: BLE001 - a truncated or foreign file: reported by the caller
                return f'{path} ({str(err).splitlines()[0] if str(err) else type(err).__name__})'
    return None


def load_resume_state(opt):
    """The training state to resume from, or None.

    With ``opt['auto_resume']`` the newest usable ``<iter>.state`` in ``path.training_states`` is used: a state that
    cannot be read, or whose saved network files cannot (e.g. truncated by a kill during a write without atomic
    saves), is skipped with a warning for the previous one; otherwise ``path.resume_state`` if set. Files are read
    by the package's one loader (``weights_only``, onto the CPU; ``resume_training`` moves optimizer states to
    their parameters' device). Sets ``path.resume_state`` to the file used and, like BasicSR's ``check_resume``,
    points ``path.pretrain_network_<x>`` at the state's ``models/net_<x>_<iter>.pth``, except for networks the
    experiment did not save (a frozen prior keeps its configured file).
    """
    candidates = []
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        if osp.isdir(state_dir):
            names = [v for v in scandir(state_dir, suffix='.state', recursive=False) if v[:-6].isdigit()]
            candidates = [osp.join(state_dir, v) for v in sorted(names, key=lambda v: -int(v[:-6]))]
    elif opt['path'].get('resume_state'):
        candidates = [opt['path']['resume_state']]

    for state_path in candidates:
        try:
            resume_state = load_untrusted(state_path)
            problem = _unreadable_network(opt, resume_state['iter'])
            if problem is not None:
                raise ValueError(f'path.resume_state: {state_path}: its network file {problem} cannot be read')
        except Exception as err:  # noqa: BLE001 - any unusable state is skipped, the error is reported
            if not opt['auto_resume']:
                raise
            warnings.warn(f'auto_resume: skipping training state {state_path}: {str(err).splitlines()[0]}')
            continue
        configured = {k: opt['path'].get(k) for k in _network_files(opt, resume_state['iter'])}
        opt['path']['resume_state'] = state_path
        check_resume(opt, resume_state['iter'])
        for key, path in _network_files(opt, resume_state['iter']).items():
            if not osp.isfile(path):  # not saved by this experiment (e.g. a frozen prior): keep its own file
                opt['path'][key] = configured[key]
        return resume_state
    if candidates:
        warnings.warn('auto_resume: no usable training state, starting from scratch.')
    return None


class ResumableEnlargedSampler(EnlargedSampler):
    """BasicSR's ``EnlargedSampler`` that can drop the samples one epoch already consumed (exact resume)."""

    def __init__(self, dataset, num_replicas, rank, ratio=1):
        super().__init__(dataset, num_replicas, rank, ratio)
        self.skip_epoch = None
        self.skip_samples = 0

    def skip(self, epoch, num_samples):
        """In epoch ``epoch`` only, leave out the first ``num_samples`` samples of this process."""
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


def create_train_val_dataloader(opt, logger, resume_state=None):
    """Train and validation loaders; epochs counted from full batches; the resumed epoch's batches skipped.

    Returns:
        tuple: ``(train_loader, train_sampler, val_loaders, total_epochs, total_iters)``.
    """
    train_loader = train_sampler = None
    total_epochs = total_iters = 0
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
            train_set = build_dataset(dataset_opt)
            train_sampler = ResumableEnlargedSampler(train_set, opt['world_size'], opt['rank'], ratio)
            train_loader = build_dataloader(train_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                            sampler=train_sampler, seed=opt['manual_seed'])
            # the loader draws its workers' base seed when an epoch starts: from its own generator (re-seeded per
            # epoch in the loop), not from torch's global one, so a run resumed mid-epoch draws what the
            # uninterrupted run would
            train_loader.generator = torch.Generator()
            batch = train_loader.batch_size
            full_batches = train_sampler.num_samples // batch  # the train loader drops the incomplete last one
            if full_batches == 0:
                raise ValueError(f'datasets.train: {train_sampler.num_samples} samples per process is less than one '
                                 f'batch of {batch}; raise dataset_enlarge_ratio or lower batch_size_per_gpu')
            total_iters = int(opt['train']['total_iter'])
            total_epochs = math.ceil(total_iters / full_batches)
            logger.info('Training statistics:'
                        f'\n\tNumber of train images: {len(train_set)}'
                        f'\n\tDataset enlarge ratio: {ratio}'
                        f'\n\tBatch size per gpu: {batch}'
                        f'\n\tWorld size (gpu number): {opt["world_size"]}'
                        f'\n\tRequire iter number per epoch: {full_batches}'
                        f'\n\tTotal epochs: {total_epochs}; iters: {total_iters}.')
            if resume_state is not None:
                epoch, current_iter = resume_state['epoch'], resume_state['iter']
                consumed = current_iter - epoch * full_batches
                if 0 <= consumed <= full_batches:
                    train_sampler.skip(epoch, consumed * batch)
                    logger.info(f'Resume: skipping the {consumed} batches of epoch {epoch} already trained on.')
                else:
                    logger.warning(f'Resume: iteration {current_iter} does not fall in epoch {epoch} with '
                                   f'{full_batches} iterations per epoch (batch size or data changed?); '
                                   'the epoch restarts from its first batch.')
        elif phase.split('_')[0] == 'val':
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                sampler=None, seed=opt['manual_seed']))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
        else:
            raise ValueError(f"datasets.{phase}: unknown phase (expected 'train' or 'val[_n]' in a train file)")
    if train_loader is None:
        raise ValueError("datasets.train: a training option file needs a 'train' dataset")
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters


def write_options_copy(opt_text, folder, opt_name, rank=0):
    """Write the resolved options (``opt_text``) into ``folder/<opt_name>`` atomically, on rank 0 only, under a
    header with the time and command line (as BasicSR's copy has)."""
    if rank != 0:
        return
    header = f"# GENERATE TIME: {time.asctime()}\n# CMD:\n# {' '.join(sys.argv)}\n\n"
    os.makedirs(folder, exist_ok=True)
    with atomic_open(osp.join(folder, opt_name), 'w') as f:
        f.write(header + opt_text)


def _prefetcher(train_loader, opt, logger):
    mode = opt['datasets']['train'].get('prefetch_mode')
    if mode in (None, 'cpu'):
        return CPUPrefetcher(train_loader)
    if mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('datasets.train.pin_memory: must be true with prefetch_mode cuda')
        logger.info('Use cuda prefetch dataloader')
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"datasets.train.prefetch_mode: expected ~, 'cpu' or 'cuda', got {mode!r}")


@contextmanager
def _no_trace_if_setup_fails(opt, fresh):
    """A fresh run that fails while being set up (bad data, a wrong pretrained file, ...) leaves no experiment folder
    behind, and the earlier folder of that name that BasicSR archived for it (``<name>_archived_<time>``) is put
    back: the error is printed, nothing else changes."""
    root = opt['path']['experiments_root']
    parent, name = osp.split(root)
    before = set(os.listdir(parent)) if osp.isdir(parent) else set()
    existed = osp.exists(root)
    try:
        yield
    except BaseException:
        if fresh and opt['rank'] == 0 and osp.isdir(root):
            shutil.rmtree(root, ignore_errors=True)
            archived = [n for n in os.listdir(parent) if n not in before and n.startswith(f'{name}_archived_')]
            if existed and len(archived) == 1:
                os.rename(osp.join(parent, archived[0]), root)
        raise


def _set_up_training(opt, root_path, opt_text, opt_name, resume_state):
    """Experiment folders (fresh runs), the option copy, the logger, the data loaders and the model."""
    from basicsr.train import init_tb_loggers

    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(root_path, 'tb_logger', opt['name']))
    write_options_copy(opt_text, opt['path']['experiments_root'], opt_name, opt['rank'])

    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    if opt['rank'] == 0:  # a run killed during a save left these behind
        for key in ('models', 'training_states'):
            stale = remove_stale_temporaries(opt['path'][key])
            if stale:
                logger.info(f"Removed {len(stale)} unfinished temporary file(s) from {opt['path'][key]}: {stale}")
    tb_logger = init_tb_loggers(opt)

    loaders = create_train_val_dataloader(opt, logger, resume_state)
    model = build_model(opt)
    if resume_state is not None:
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
    return model, loaders, logger, tb_logger


def train_pipeline(opt, root_path, opt_text, opt_name):
    """BasicSR's training loop on finalised options (:func:`finalize_options`).

    Args:
        opt (dict): Finalised train options.
        root_path (str): Root of ``tb_logger/``.
        opt_text (str): The resolved option file, copied into the experiment folder as ``opt_name``.
        opt_name (str): File name of that copy.
    """
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True
    resume_state = load_resume_state(opt)
    with _no_trace_if_setup_fails(opt, fresh=resume_state is None):
        model, loaders, logger, tb_logger = _set_up_training(opt, root_path, opt_text, opt_name, resume_state)
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = loaders
    start_epoch = current_iter = 0
    if resume_state is not None:
        start_epoch, current_iter = resume_state['epoch'], resume_state['iter']
    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetcher = _prefetcher(train_loader, opt, logger)

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    val_opt = opt.get('val')
    warmup_iter = opt['train'].get('warmup_iter', -1)
    for epoch in range(start_epoch, total_epochs + 1):
        train_sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(opt['manual_seed'] * 100003 + epoch)
        prefetcher.reset()
        train_data = prefetcher.next()
        while train_data is not None:
            data_timer.record()
            current_iter += 1
            if current_iter > total_iters:
                break
            model.update_learning_rate(current_iter, warmup_iter=warmup_iter)
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()  # the ETA should not count the set-up
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)
            if val_opt is not None and current_iter % val_opt['val_freq'] == 0:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, val_opt['save_img'])
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()
        if current_iter > total_iters:
            current_iter = total_iters
            break

    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)
    if val_opt is not None and current_iter % val_opt['val_freq'] != 0:  # not validated at this iteration yet
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, val_opt['save_img'])
    if tb_logger:
        tb_logger.close()
    return model


def test_pipeline(opt, root_path, opt_text, opt_name):
    """BasicSR's test loop on finalised test options: every ``datasets`` entry through ``model.validation``."""
    torch.backends.cudnn.benchmark = True
    make_exp_dirs(opt)
    write_options_copy(opt_text, opt['path']['results_root'], opt_name, opt['rank'])
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))

    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = build_dataset(dataset_opt)
        test_loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                             sampler=None, seed=opt['manual_seed']))
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
    model = build_model(opt)
    for test_loader in test_loaders:
        logger.info(f"Testing {test_loader.dataset.opt['name']}...")
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None, save_img=opt['val']['save_img'])
    return model
