"""Shared test helpers: tiny option files and running the entry points in subprocesses."""
import os
import re
import subprocess
import sys
from os import path as osp

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tiny_sr_options(data_root, name, total_iter=20, **overrides):
    """A tiny MSRResNet/SinCASRModel option dict on the pairs written by ``write_sr_pairs`` (x2, 64 px GT)."""
    opt = {
        'name': name,
        'model_type': 'SinCASRModel',
        'scale': 2,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tiny_train', 'type': 'PairedImageDataset',
                'dataroot_gt': osp.join(data_root, 'gt'), 'dataroot_lq': osp.join(data_root, 'lq'),
                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                'gt_size': 64, 'use_hflip': False, 'use_rot': False,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None,
            },
            'val': {
                'name': 'tiny_val', 'type': 'PairedImageDataset',
                'dataroot_gt': osp.join(data_root, 'gt'), 'dataroot_lq': osp.join(data_root, 'lq'),
                'io_backend': {'type': 'disk'},
            },
        },
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2,
                      'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 2e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter // 2], 'gamma': 0.5},
            'total_iter': total_iter, 'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {'val_freq': total_iter, 'save_img': True, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    return deep_update(opt, overrides)


def deep_update(base, update):
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def entry_cmd(module, *args):
    return [sys.executable, '-m', f'basicsr_sinca.{module}', *map(str, args)]


def sub_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def wheel_env(site):
    """``sub_env()`` with only ``site`` (a folder the built wheel was installed into) on ``PYTHONPATH``: the
    package and its option files come from the wheel, not from the checkout."""
    env = sub_env()
    env['PYTHONPATH'] = str(site)
    return env


def run_cmd(cmd, cwd, timeout=600, check=True, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env or sub_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'command failed ({proc.returncode}): {" ".join(map(str, cmd))}\n'
                             f'--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}')
    return proc


def read_train_log(exp_dir):
    logs = sorted(f for f in os.listdir(exp_dir) if f.startswith('train_') and f.endswith('.log'))
    assert logs, f'no train log in {exp_dir}'
    return ''.join(open(osp.join(exp_dir, f)).read() for f in logs)


def logged_values(log_text, key):
    """Every value of ``key`` in BasicSR's message-logger lines (``key: value``), as floats, in order."""
    return [float(v) for v in re.findall(rf'\b{key}: ([-\d.e+]+)', log_text)]


LOSS_LINE = re.compile(r'iter:\s*([\d,]+),.*?l_pix: ([-\d.e+]+)')


def logged_losses(log_text):
    """{iteration: l_pix string} from BasicSR's message logger lines."""
    return {int(m.group(1).replace(',', '')): m.group(2) for m in LOSS_LINE.finditer(log_text)}


TINY_VQGAN = dict(img_size=64, nf=32, ch_mult=[1, 2, 2, 4], res_blocks=1, attn_resolutions=[8], codebook_size=64,
                  emb_dim=32)


def make_tiny_codeformer_workdir(root, num_faces=6, seed=0):
    """The files options/_base_/codeformer/tiny.yml expects, under ``root``: real face crops and a random tiny
    VQGAN prior (codebook ~ N(0, 1) so that targets are not degenerate). Returns the prior's path."""
    import torch

    from basicsr_sinca.archs.codeformer_arch import VQAutoEncoder
    from basicsr_sinca.utils.sample_data import write_face_images
    write_face_images(os.path.join(root, 'datasets', 'tiny_faces'), 64, num_faces, seed)
    torch.manual_seed(seed)
    prior = VQAutoEncoder(**TINY_VQGAN)
    torch.nn.init.normal_(prior.quantize.embedding.weight)
    path = os.path.join(root, 'experiments', 'pretrained_models', 'tiny', 'vqgan_tiny.pth')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({'params_ema': prior.state_dict()}, path)
    return path


TINY_FEMASR_HQ = dict(gt_resolution=64, codebook_params=[[8, 64, 32]], channels={8: 64, 16: 64, 32: 32, 64: 32},
                      swin_opt=dict(blk_depth=1, num_heads=4, window_size=4), LQ_stage=False)


def make_tiny_femasr_workdir(root, photos=('coffee', 'chelsea', 'rocket', 'astronaut'), size=160, seed=0):
    """The files options/_base_/femasr/tiny.yml expects under ``root``: BSRGAN x4 pairs of real-photo crops
    (through scripts/generate_bsrgan_pairs.py) and a random tiny HQ prior (codebook ~ N(0, 1)). Returns its path."""
    import sys

    import cv2
    import torch

    from basicsr_sinca.archs.femasr_arch import FeMaSRNet
    from basicsr_sinca.utils.sample_data import load_photo
    hr = os.path.join(root, 'hr_src')
    os.makedirs(hr, exist_ok=True)
    for name in photos:
        cv2.imwrite(os.path.join(hr, f'{name}.png'), load_photo(name)[:size, :size])
    sys.path.insert(0, os.path.join(REPO, 'scripts'))
    import generate_bsrgan_pairs
    assert generate_bsrgan_pairs.main(['-i', hr, '-o', os.path.join(root, 'datasets', 'tiny_sr'), '--scale', '4']) == 0
    torch.manual_seed(seed)
    prior = FeMaSRNet(**TINY_FEMASR_HQ)
    torch.nn.init.normal_(prior.quantize_group[0].embedding.weight)
    path = os.path.join(root, 'experiments', 'pretrained_models', 'tiny', 'femasr_hq_tiny.pth')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state_dict = prior.state_dict()
    # like the released FeMaSR_HRP_model_g.pth: the HQ-pretraining semantic branch rides along (ignored on load)
    state_dict['conv_semantic.0.weight'] = torch.zeros(8, 8, 1, 1)
    state_dict['vgg_feat_extractor.mean'] = torch.zeros(1, 3, 1, 1)
    torch.save({'params': state_dict}, path)
    return path


def make_toy_workdir(root, num_faces=6, seed=0):
    """Face crops (64 px) and a random prior of the test-only two-codebook restorer (``toy_restorer.py``) under
    ``root``; codebooks ~ N(0, 1). Returns the prior's path."""
    import torch

    import toy_restorer
    from basicsr_sinca.utils.sample_data import write_face_images
    write_face_images(os.path.join(root, 'datasets', 'toy_faces'), 64, num_faces, seed)
    torch.manual_seed(seed)
    prior = toy_restorer.ToyPrior()
    for e in prior.codebook:
        torch.nn.init.normal_(e.weight)
    path = os.path.join(root, 'toy_prior.pth')
    torch.save({'params': prior.state_dict()}, path)
    return path


TOY_BOTTLENECKS = [{'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, {'type': 'nearest'}]


def toy_options(root, name='toy', bottleneck=None, total_iter=6, **overrides):
    """Options of a toy-restorer training with the generic ``VQRestorationModel`` (images in [0, 1])."""
    faces = {'type': 'FFHQBlindDataset', 'dataroot_gt': os.path.join(str(root), 'datasets', 'toy_faces'),
             'io_backend': {'type': 'disk'}, 'in_size': 64, 'gt_size': 64, 'mean': [0, 0, 0], 'std': [1, 1, 1],
             'blur_sigma': [0.5, 2], 'downsample_range': [1, 3], 'noise_range': [0, 5], 'jpeg_range': [70, 95]}
    prior = os.path.join(str(root), 'toy_prior.pth')
    opt = {
        'name': name, 'model_type': 'VQRestorationModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': dict(faces, name='toy_train', use_hflip=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
                          dataset_enlarge_ratio=1, prefetch_mode=None),
            'val': dict(faces, name='toy_val', seed=5),
        },
        'network_g': {'type': 'ToyRestorer', 'bottleneck': bottleneck or TOY_BOTTLENECKS},
        'path': {'pretrain_network_hq': prior, 'pretrain_network_g': prior, 'param_key_g': 'params',
                 'strict_load_g': False, 'resume_state': None},
        'train': {
            'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': total_iter,
            'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'feat_opt': {'type': 'FeatureMatchingLoss'},
        },
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    return deep_update(opt, overrides)


def model_from_options(opt, root):
    """Build a BasicSR model in this process from plain options, filling what BasicSR's option parser adds."""
    from copy import deepcopy

    from basicsr.models import build_model

    import basicsr_sinca  # noqa: F401
    opt = deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    exp = os.path.join(str(root), 'experiments', opt['name'])
    opt['path'].update(experiments_root=exp, models=os.path.join(exp, 'models'),
                       training_states=os.path.join(exp, 'training_states'), log=exp,
                       visualization=os.path.join(exp, 'visualization'))
    return build_model(opt)


def peak_rss_mb(fn):
    """``(fn(), MB)``: the call's result and how far it raised the process's peak resident memory (Linux /proc)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the high-water mark
    rss = int([line for line in open('/proc/self/status') if line.startswith('VmRSS')][0].split()[1])
    result = fn()
    hwm = int([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1])
    return result, (hwm - rss) / 1024


def assert_face_stage_overfits(root, opt_path, name, iters=40, key='l_feat_match', ratio=0.3):
    """Train ``opt_path`` on two fixed tiny faces (fixed degradations, no flips, batch 2: every iteration sees the
    same batch) for ``iters`` iterations through the entry point; the mean of ``key`` over the last three iterations
    must fall below ``ratio`` times that of the first three."""
    two = root / 'datasets' / 'two'
    two.mkdir(exist_ok=True)
    for face in ('face_000.png', 'face_001.png'):
        (two / face).write_bytes((root / 'datasets' / 'tiny_faces' / face).read_bytes())
    args = ['-opt', opt_path, '--force_yml', f'name={name}', f'train:total_iter={iters}', 'datasets:train:seed=7',
            'datasets:train:use_hflip=false', 'datasets:train:dataroot_gt=datasets/two', 'val:val_freq=1000',
            'logger:save_checkpoint_freq=1000']
    run_cmd(entry_cmd('train', *args), cwd=root)
    values = logged_values(read_train_log(root / 'experiments' / name), key)
    assert len(values) == iters
    start, end = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert end < ratio * start, (start, end)


def assert_same_nested(a, b, where):
    """Nested dicts / lists / tensors equal to the bit (``where`` names the first difference)."""
    import torch
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_nested(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_nested(x, y, f'{where}[{i}]')
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def assert_resume_is_exact(root, opt_path, total=4, resume_at=2):
    """Train ``opt_path`` (in ``root``, in this process) for ``total`` iterations with checkpoints every ``resume_at``
    and a validation right after each; copy the experiment, drop what came after ``resume_at`` and resume the copy
    from its ``resume_at`` state to ``total``. Every file saved at ``total`` (weights with EMA and discriminators,
    optimizer, scheduler and random generator states) must be bit-identical to the uninterrupted run's."""
    import shutil

    import torch

    from basicsr_sinca.utils.launch import main
    from basicsr_sinca.utils.options import load_options
    opt = load_options(opt_path)
    name = f"resume_{opt['name']}"
    force = [f'train:total_iter={total}', f'logger:save_checkpoint_freq={resume_at}']
    if isinstance(opt.get('val'), dict):
        force.append(f'val:val_freq={resume_at}')
    exp, resumed = osp.join(str(root), 'experiments', name), osp.join(str(root), 'experiments', name + '_resumed')
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(True, ['-opt', opt_path, '--force_yml', f'name={name}', *force]) == 0
        shutil.copytree(exp, resumed)
        for folder in ('models', 'training_states'):
            for f in os.listdir(osp.join(resumed, folder)):
                if f.split('.')[0].rsplit('_', 1)[-1] not in (str(resume_at), 'best'):
                    os.remove(osp.join(resumed, folder, f))
        state = osp.join(resumed, 'training_states', f'{resume_at}.state')
        assert main(True, ['-opt', opt_path, '--force_yml', f'name={name}_resumed', f'path:resume_state={state}',
                           *force]) == 0
    finally:
        os.chdir(cwd)
    compared = []
    for folder in ('models', 'training_states'):
        for f in sorted(os.listdir(osp.join(exp, folder))):
            if f.split('.')[0].rsplit('_', 1)[-1] in (str(total), 'latest'):
                a, b = (torch.load(osp.join(d, folder, f), map_location='cpu', weights_only=True)
                        for d in (exp, resumed))
                assert_same_nested(a, b, f'{folder}/{f}')
                compared.append(f)
    assert f'{total}.state' in compared and f'net_g_{total}.pth' in compared, compared
    return compared
