"""Foundation: the train/test entry points drive BasicSR's own pipelines on CPU."""
import os
import subprocess
import sys
from os import path as osp

import pytest
import torch
from helpers import REPO, entry_cmd, read_train_log, run_cmd, sub_env, tiny_sr_options, write_yaml

from basicsr_sinca.utils.launch import main as launch_main
from basicsr_sinca.utils.options import OptionError, apply_force_yml, load_options


def test_train_and_validate_on_cpu(tmp_path, sr_pairs):
    opt_file = write_yaml(tmp_path / 'tiny.yml', tiny_sr_options(sr_pairs, 'tiny_train_val'))
    run_cmd(entry_cmd('train', '-opt', opt_file), cwd=tmp_path)

    exp = tmp_path / 'experiments' / 'tiny_train_val'
    log = read_train_log(exp)
    assert 'Validation tiny_val' in log and '# psnr:' in log and '# ssim:' in log
    psnr = float(log.split('# psnr:')[-1].split()[0])
    assert 20 < psnr < 60, psnr
    assert (exp / 'models' / 'net_g_20.pth').is_file() and (exp / 'models' / 'net_g_latest.pth').is_file()
    assert (exp / 'training_states' / '20.state').is_file()
    ckpt = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu')
    assert set(ckpt) == {'params', 'params_ema'}
    # the resolved YAML is what was copied, under the original file name, with a command header; BasicSR's own
    # loader reads it and imports the plugin through its tag; ours reads the tag as a name
    copied = (exp / 'tiny.yml').read_text()
    assert copied.startswith('# GENERATE TIME') and '# CMD:' in copied
    from basicsr.utils.options import yaml_load
    basicsr_view = yaml_load(str(exp / 'tiny.yml'))
    assert basicsr_view['plugins'] == ['basicsr_sinca'] and basicsr_view['name'] == 'tiny_train_val'
    assert load_options(str(exp / 'tiny.yml'))['plugins'] == ['basicsr_sinca']
    # nothing outside the working directory's experiments/ folder (and no temp files next to checkpoints)
    assert not [f for f in os.listdir(exp / 'models') if f.endswith('.tmp')]


def test_test_pipeline_and_script_entry(tmp_path, sr_pairs):
    train_opt = tiny_sr_options(sr_pairs, 'tiny_for_test', total_iter=4)
    run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'train.yml', train_opt)), cwd=tmp_path)
    ckpt = tmp_path / 'experiments' / 'tiny_for_test' / 'models' / 'net_g_latest.pth'
    test_opt = {
        'name': 'tiny_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': dict(train_opt['datasets']['val'], name='tiny_set')},
        'network_g': train_opt['network_g'],
        'path': {'pretrain_network_g': str(ckpt), 'param_key_g': 'params_ema', 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': train_opt['val']['metrics']},
    }
    # run as a file, the way BasicSR users call basicsr/test.py
    cmd = [sys.executable, osp.join(REPO, 'basicsr_sinca', 'test.py'), '-opt', write_yaml(tmp_path / 't.yml', test_opt)]
    run_cmd(cmd, cwd=tmp_path)
    vis = tmp_path / 'results' / 'tiny_test' / 'visualization' / 'tiny_set'
    assert len(list(vis.glob('*.png'))) == 6
    log = ''.join(p.read_text() for p in (tmp_path / 'results' / 'tiny_test').glob('test_*.log'))
    assert '# psnr:' in log and '# ssim:' in log


def test_base_inheritance_and_print_opt(tmp_path, capsys):
    (tmp_path / '_base_').mkdir()
    (tmp_path / '_base_' / 'common.yml').write_text(
        'name: base\nnum_gpu: 0\ntrain:\n  optim_g: {type: Adam, lr: !!float 2e-4, betas: [0.9, 0.99]}\n'
        '  total_iter: 100\n  ema_decay: 0.999\nlogger: {print_freq: 10}\n')
    (tmp_path / '_base_' / 'data.yml').write_text('datasets:\n  train: {type: PairedImageDataset, gt_size: 64}\n')
    (tmp_path / 'child.yml').write_text(
        "_base_: ['./_base_/common.yml', './_base_/data.yml']\nname: child\n"
        'train:\n  total_iter: 5\n  optim_g: {lr: !!float 1e-3}\n  eta_min: 1e-7\n')
    opt = load_options(str(tmp_path / 'child.yml'))
    assert opt['name'] == 'child' and '_base_' not in opt
    assert opt['train']['total_iter'] == 5 and opt['train']['ema_decay'] == 0.999
    assert opt['train']['optim_g'] == {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]}
    assert isinstance(opt['train']['optim_g']['lr'], float)
    assert isinstance(opt['train']['eta_min'], float) and opt['train']['eta_min'] == 1e-7  # '1e-7' is a str to PyYAML
    assert opt['datasets']['train']['gt_size'] == 64

    apply_force_yml(opt, ['train:ema_decay=0.5', 'logger:print_freq=3'])
    assert opt['train']['ema_decay'] == 0.5 and opt['logger']['print_freq'] == 3
    with pytest.raises(OptionError, match="'nothere' is not a mapping"):
        apply_force_yml(opt, ['nothere:x=1'])

    assert launch_main(True, ['-opt', str(tmp_path / 'child.yml'), '--print_opt',
                              '--force_yml', 'train:total_iter=7']) == 0
    (tmp_path / 'printed.yml').write_text(capsys.readouterr().out)
    printed = load_options(str(tmp_path / 'printed.yml'))  # a flat file: read without mmengine
    assert printed['train']['total_iter'] == 7 and printed['train']['optim_g']['lr'] == 1e-3
    assert printed['datasets']['train']['type'] == 'PairedImageDataset'


@pytest.mark.parametrize('change, expected', [
    ({'network_g': {'type': 'MSRResNett'}}, "network_g.type: unknown arch 'MSRResNett'; did you mean 'MSRResNet'"),
    ({'model_type': 'NoSuchModel'}, "model_type: unknown model 'NoSuchModel'"),
    ({'datasets': {'train': {'dataroot_gt': 'missing/gt_folder'}}},
     'datasets.train.dataroot_gt: path does not exist: missing/gt_folder'),
    ({'path': {'pretrain_network_g': 'nowhere/net_g.pth'}},
     'path.pretrain_network_g: pretrained file not found: nowhere/net_g.pth'),
    ({'train': {'pixel_opt': {'type': 'L3Loss'}}}, "train.pixel_opt.type: unknown loss 'L3Loss'"),
    ({'val': {'metrics': {'psnr': {'type': 'psnr'}}}}, "val.metrics.psnr.type: unknown metric 'psnr'"),
    ({'num_gpu': 1}, 'num_gpu: 1 requested but this machine has 0 CUDA devices'),
    # misspelled keys are refused with the key nothing reads and the closest one that something does
    ({'train': {'total_iters': 5}}, "train.total_iters: unknown option (nothing reads it); did you mean "
     "'train.total_iter'?"),
    ({'manual_sed': 3}, "manual_sed: unknown option (nothing reads it); did you mean 'manual_seed'?"),
    ({'datasets': {'train': {'use_hfilp': True}}}, "did you mean 'datasets.train.use_hflip'?"),
    ({'val': {'val_frq': 5}}, "val.val_frq: unknown option (nothing reads it); did you mean 'val.val_freq'?"),
    ({'logger': {'print_frq': 5}}, "did you mean 'logger.print_freq'?"),
    ({'path': {'resume_stat': 'x.state'}}, "did you mean 'path.resume_state'?"),
    ({'network_g': {'num_fet': 8}}, "network_g.num_fet: unknown option (nothing reads it); did you mean "
     "'network_g.num_feat'?"),
    ({'train': {'pixel_opt': {'los_weight': 2.0}}}, "did you mean 'train.pixel_opt.loss_weight'?"),
    ({'train': {'total_iter': -5}}, 'train.total_iter: expected a positive number of iterations, got -5'),
    ({'train': {'optim_g': {'lr': '1e-3x'}}}, "train.optim_g.lr: expected a number, got '1e-3x'"),
])
def test_bad_options_fail_in_one_line(tmp_path, sr_pairs, capsys, change, expected):
    if change.get('num_gpu') and torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    opt_file = write_yaml(tmp_path / 'bad.yml', tiny_sr_options(sr_pairs, 'bad', **change))
    assert launch_main(True, ['-opt', opt_file]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    assert expected in err, err
    assert not (tmp_path / 'experiments').exists()


def test_bad_option_file_errors(tmp_path, capsys):
    assert launch_main(True, ['-opt', str(tmp_path / 'absent.yml')]) == 2
    assert 'option file not found' in capsys.readouterr().err
    (tmp_path / 'broken.yml').write_text('name: x\ntrain: [\n')
    assert launch_main(True, ['-opt', str(tmp_path / 'broken.yml')]) == 2
    err = capsys.readouterr().err
    assert 'broken.yml: invalid YAML (line' in err and err.count('\n') == 1
    (tmp_path / 'orphan.yml').write_text("_base_: ['./gone.yml']\nname: x\n")
    assert launch_main(True, ['-opt', str(tmp_path / 'orphan.yml')]) == 2
    assert '_base_ file not found' in capsys.readouterr().err
    (tmp_path / 'a.yml').write_text("_base_: ./b.yml\nname: a\n")
    (tmp_path / 'b.yml').write_text("_base_: [./a.yml]\nname: b\n")
    (tmp_path / 'empty.yml').write_text('\n')
    (tmp_path / 'scalar.yml').write_text('42\n')
    for name, expected in (('a', 'a.yml: _base_ files include each other: a.yml -> b.yml -> a.yml'),
                           ('empty', 'empty.yml: the file is empty'),
                           ('scalar', 'scalar.yml: expected a mapping of options at the top level')):
        assert launch_main(True, ['-opt', str(tmp_path / f'{name}.yml')]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count('\n') == 1, err


def test_error_inside_pipeline_is_one_line_without_traceback(tmp_path, sr_pairs):
    # an invalid value BasicSR itself rejects while building the model (unknown optimizer)
    opt = tiny_sr_options(sr_pairs, 'bad_optim', train={'optim_g': {'type': 'Lion'}})
    proc = run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'o.yml', opt)), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in proc.stderr and 'optimizer Lion is not supported' in last, proc.stderr[-2000:]
    # the failed set-up left no experiment folder behind
    experiments = tmp_path / 'experiments'
    assert not experiments.exists() or not any(experiments.iterdir())


def test_failed_setup_puts_an_earlier_experiment_of_that_name_back(tmp_path, sr_pairs):
    """BasicSR archives an existing experiment folder for a fresh run of the same name; when that run fails before
    its first iteration (here: a pretrained file of another network, nothing of which loads) the earlier folder is
    back where it was, unchanged, and no archive or new folder remains."""
    earlier = tmp_path / 'experiments' / 'again'
    (earlier / 'models').mkdir(parents=True)
    (earlier / 'models' / 'net_g_100.pth').write_bytes(b'earlier run')
    foreign = tmp_path / 'foreign.pth'
    torch.save({'params': {'other.weight': torch.zeros(2)}}, foreign)
    opt = tiny_sr_options(sr_pairs, 'again', path={'pretrain_network_g': str(foreign), 'strict_load_g': False})
    proc = run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'o.yml', opt)), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'nothing loaded (is it the right file?)' in proc.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['again']
    assert sorted(p.name for p in earlier.rglob('*')) == ['models', 'net_g_100.pth']


def test_help_lists_basicsr_flags():
    out = subprocess.run(entry_cmd('train', '--help'), capture_output=True, text=True, env=sub_env(), check=True).stdout
    for flag in ('-opt', '--launcher', '--auto_resume', '--debug', '--force_yml', '--print_opt'):
        assert flag in out
    out = subprocess.run(entry_cmd('test', '--help'), capture_output=True, text=True, env=sub_env(), check=True).stdout
    assert '--auto_resume' not in out and '-opt' in out


def test_console_scripts_installed():
    import shutil
    bin_dir = osp.dirname(sys.executable)
    for script in ('sinca-train', 'sinca-test', 'sinca-quickstart'):
        path = shutil.which(script, path=bin_dir)
        assert path, f'{script} not installed next to {sys.executable}'
    out = subprocess.run([osp.join(bin_dir, 'sinca-train'), '--help'], capture_output=True, text=True, check=True)
    assert '--auto_resume' in out.stdout
