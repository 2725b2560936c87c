"""Offline quickstart: ``python -m basicsr_sinca.quickstart``.

Builds a tiny super-resolution set from scikit-image's bundled photographs and trains + validates a
tiny network through BasicSR's pipeline (the same entry point as ``basicsr_sinca/train.py``), on CPU.
"""
import argparse
import os
import sys
from os import path as osp

import yaml


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m basicsr_sinca.quickstart', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='quickstart_out', help='output folder (default: ./quickstart_out)')
    parser.add_argument('--iters', type=int, default=40, help='training iterations (default: 40)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from basicsr_sinca.utils.launch import main as launch
    from basicsr_sinca.utils.sample_data import write_sr_pairs

    out = osp.abspath(args.out)
    data = osp.join(out, 'data')
    write_sr_pairs(data, num_per_image=2, gt_size=64, scale=2, seed=0)
    opt = {
        'name': 'quickstart_tiny_sr', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'photos', 'type': 'PairedImageDataset', 'dataroot_gt': osp.join(data, 'gt'),
                      'dataroot_lq': osp.join(data, 'lq'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                      'gt_size': 64, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'photos_val', 'type': 'PairedImageDataset', 'dataroot_gt': osp.join(data, 'gt'),
                    'dataroot_lq': osp.join(data, 'lq'), 'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2,
                      'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'experiments_root': osp.join(out, 'experiments')},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [args.iters], 'gamma': 0.5},
                  'total_iter': args.iters, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': args.iters, 'save_img': True, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': True}}},
        'logger': {'print_freq': 10, 'save_checkpoint_freq': args.iters, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    opt_file = osp.join(out, 'quickstart_tiny_sr.yml')
    os.makedirs(out, exist_ok=True)
    with open(opt_file, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return launch(is_train=True, argv=['-opt', opt_file])


if __name__ == '__main__':
    sys.exit(main())
