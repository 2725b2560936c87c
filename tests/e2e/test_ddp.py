"""Foundation: 2-process torchrun training on CPU (gloo); rank 0 writes checkpoints and logs."""
import socket
import sys

import torch
from helpers import read_train_log, run_cmd, tiny_sr_options, write_yaml


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(tmp_path, sr_pairs):
    # enlarge the 6-image set so that both ranks see whole batches every epoch (BasicSR drops the last one)
    opt = tiny_sr_options(sr_pairs, 'ddp', total_iter=8, logger={'print_freq': 2, 'save_checkpoint_freq': 4},
                          val={'val_freq': 8}, datasets={'train': {'dataset_enlarge_ratio': 4}})
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={_free_port()}', '-m', 'basicsr_sinca.train', '-opt',
           write_yaml(tmp_path / 'ddp.yml', opt), '--launcher', 'pytorch']
    run_cmd(cmd, cwd=tmp_path, timeout=600)
    exp = tmp_path / 'experiments' / 'ddp'
    log = read_train_log(exp)
    assert 'World size (gpu number): 2' in log
    assert "'dist': True" in log or 'dist: True' in log
    assert '# psnr:' in log
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_4.pth', 'net_g_8.pth', 'net_g_latest.pth']
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['4.state', '8.state']
    assert len(list(exp.glob('train_*.log'))) == 1  # only rank 0 logs to file
    state = torch.load(exp / 'training_states' / '8.state', map_location='cpu')
    assert state['iter'] == 8


def test_torchrun_codeformer_stage2(tmp_path):
    """A baseline model under DDP on CPU: frozen fusion layers, teacher targets, EMA, rank-0 validation."""
    from os import path as osp

    from helpers import REPO, make_tiny_codeformer_workdir
    make_tiny_codeformer_workdir(str(tmp_path))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={_free_port()}', '-m', 'basicsr_sinca.train', '-opt',
           osp.join(REPO, 'options', 'train', 'codeformer', 'tiny', 'stage2_sinca.yml'), '--launcher', 'pytorch',
           '--force_yml', 'datasets:train:dataset_enlarge_ratio=4', 'train:total_iter=6', 'val:val_freq=6',
           'logger:save_checkpoint_freq=6']
    run_cmd(cmd, cwd=tmp_path, timeout=600)
    exp = tmp_path / 'experiments' / 'tiny_CodeFormer_stage2_sinca'
    log = read_train_log(exp)
    assert 'World size (gpu number): 2' in log and 'l_feat_match' in log and '# lpips:' in log
    assert (exp / 'models' / 'net_g_6.pth').is_file() and (exp / 'training_states' / '6.state').is_file()
