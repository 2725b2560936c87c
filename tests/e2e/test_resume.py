"""Foundation: kill -9 during training, --auto_resume continues exactly; checkpoints are written atomically."""
import os
import signal
import subprocess
import time

import pytest
import torch
from helpers import (assert_same_nested, entry_cmd, logged_losses, read_train_log, run_cmd, sub_env, tiny_sr_options,
                     write_yaml)

from basicsr_sinca.utils.file_io import atomic_torch_save

TOTAL = 300


def _deterministic(sr_pairs, name, save_freq, total_iter=TOTAL):
    # no random flips/rotations, crop = whole image: the data of an iteration depend only on the sampler order
    # 6 images, batch 2 -> 3 iterations per epoch
    return tiny_sr_options(
        sr_pairs, name, total_iter=total_iter,
        train={'scheduler': {'type': 'MultiStepLR', 'milestones': [100, 200], 'gamma': 0.5}},
        val={'val_freq': 10 ** 6},
        logger={'print_freq': 1, 'save_checkpoint_freq': save_freq})


def _load(path):
    return torch.load(path, map_location='cpu')


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, sr_pairs):
    """An uninterrupted deterministic run of TOTAL iterations."""
    cwd = tmp_path_factory.mktemp('reference')
    run_cmd(entry_cmd('train', '-opt', write_yaml(cwd / 'ref.yml', _deterministic(sr_pairs, 'ref', 3))), cwd=cwd)
    exp = cwd / 'experiments' / 'ref'
    return exp, logged_losses(read_train_log(exp))


def _compare_with_reference(exp, reference_run, resumed_from):
    ref_exp, ref_losses = reference_run
    losses = logged_losses(read_train_log(exp))
    after = [i for i in range(resumed_from + 1, TOTAL + 1)]
    assert [losses[i] for i in after] == [ref_losses[i] for i in after]
    assert_same_nested(_load(exp / 'models' / 'net_g_latest.pth'), _load(ref_exp / 'models' / 'net_g_latest.pth'),
                         'net_g_latest')


def test_kill_then_auto_resume_continues_exactly(tmp_path, sr_pairs, reference_run):
    opt_file = write_yaml(tmp_path / 'run.yml', _deterministic(sr_pairs, 'killed', save_freq=3))  # epoch boundaries
    states = tmp_path / 'experiments' / 'killed' / 'training_states'
    proc = subprocess.Popen(entry_cmd('train', '-opt', opt_file), cwd=tmp_path, env=sub_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if states.is_dir() and any(p.suffix == '.state' for p in states.iterdir()):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the training finished before it could be killed'
    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    assert saved and saved[-1] < TOTAL

    run_cmd(entry_cmd('train', '-opt', opt_file, '--auto_resume'), cwd=tmp_path)
    exp = tmp_path / 'experiments' / 'killed'
    log = read_train_log(exp)
    resumed = int(log.split('Resuming training from epoch: ')[1].split('iter: ')[1].split('.')[0])
    assert resumed in saved and resumed >= saved[-2 if len(saved) > 1 else -1]
    assert f'iter: {TOTAL:3d}' in log or f'iter:     {TOTAL}' in log
    _compare_with_reference(exp, reference_run, resumed)

    # optimizer, scheduler and both weight sets are bit-identical to the uninterrupted run at the end
    ref_exp = reference_run[0]
    assert_same_nested(_load(exp / 'training_states' / f'{TOTAL}.state'),
                         _load(ref_exp / 'training_states' / f'{TOTAL}.state'), 'state')
    assert_same_nested(_load(exp / 'models' / f'net_g_{TOTAL}.pth'), _load(ref_exp / 'models' / f'net_g_{TOTAL}.pth'),
                         'net_g')


def test_resume_state_restores_exact_training_state(tmp_path, sr_pairs, reference_run):
    """Resuming mid-epoch (iteration 7 of 3-iteration epochs) via path.resume_state also matches exactly."""
    opt = _deterministic(sr_pairs, 'midepoch', save_freq=7, total_iter=7)
    run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'a.yml', opt)), cwd=tmp_path)
    exp = tmp_path / 'experiments' / 'midepoch'
    state = _load(exp / 'training_states' / '7.state')
    assert state['iter'] == 7 and state['epoch'] == 2

    opt['train']['total_iter'] = TOTAL
    opt['path']['resume_state'] = str(exp / 'training_states' / '7.state')
    run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'b.yml', opt)), cwd=tmp_path)
    log = read_train_log(exp)
    assert 'skipping the 1 batches of epoch 2 already trained on' in log
    _compare_with_reference(exp, reference_run, 7)


def test_atomic_save_never_leaves_partial_files(tmp_path, monkeypatch):
    target = tmp_path / '10.state'
    atomic_torch_save({'iter': 5}, target)

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b'partial bytes')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', exploding_save)
    with pytest.raises(OSError, match='disk full'):
        atomic_torch_save({'iter': 10}, target)
    monkeypatch.undo()
    assert _load(target) == {'iter': 5}
    assert os.listdir(tmp_path) == ['10.state']


def test_auto_resume_skips_unreadable_newest_state(tmp_path, sr_pairs):
    opt_file = write_yaml(tmp_path / 'r.yml', _deterministic(sr_pairs, 'corrupt', save_freq=3, total_iter=6))
    run_cmd(entry_cmd('train', '-opt', opt_file), cwd=tmp_path)
    states = tmp_path / 'experiments' / 'corrupt' / 'training_states'
    (states / '9.state').write_bytes(b'\x80truncated')  # e.g. written by a tool without atomic saves
    opt_file = write_yaml(tmp_path / 'r.yml', _deterministic(sr_pairs, 'corrupt', save_freq=3, total_iter=9))
    proc = run_cmd(entry_cmd('train', '-opt', opt_file, '--auto_resume'), cwd=tmp_path)
    assert 'skipping training state' in proc.stderr and '9.state' in proc.stderr
    assert 'Resuming training from epoch: 1, iter: 6' in read_train_log(tmp_path / 'experiments' / 'corrupt')


def test_auto_resume_falls_back_past_a_truncated_network_file_and_cleans_temporaries(tmp_path, sr_pairs):
    """A good 9.state next to a truncated net_g_9.pth (a kill during a non-atomic write, or a copy that stopped):
    --auto_resume takes the previous pair instead of failing; hidden temporaries of a killed save are removed at
    start; checkpoints get the permissions the umask gives (not mkstemp's 0600)."""
    opt_file = write_yaml(tmp_path / 'r.yml', _deterministic(sr_pairs, 'truncnet', save_freq=3, total_iter=9))
    run_cmd(entry_cmd('train', '-opt', opt_file), cwd=tmp_path)
    exp = tmp_path / 'experiments' / 'truncnet'
    net9 = exp / 'models' / 'net_g_9.pth'
    net9.write_bytes(net9.read_bytes()[:100])
    stale = exp / 'models' / '.net_g_12.pth.abc123.tmp'
    stale.write_bytes(b'\0' * 1000)
    opt_file = write_yaml(tmp_path / 'r.yml', _deterministic(sr_pairs, 'truncnet', save_freq=3, total_iter=12))
    proc = run_cmd(entry_cmd('train', '-opt', opt_file, '--auto_resume'), cwd=tmp_path)
    assert 'skipping training state' in proc.stderr and 'net_g_9.pth' in proc.stderr
    log = read_train_log(exp)
    assert 'Resuming training from epoch: 1, iter: 6' in log and 'Removed 1 unfinished temporary file' in log
    assert not stale.exists() and _load(exp / 'models' / 'net_g_12.pth')['params']
    umask = os.umask(0)
    os.umask(umask)
    for f in (exp / 'models' / 'net_g_12.pth', exp / 'training_states' / '12.state'):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_full_disk_during_a_save_is_one_line(tmp_path, sr_pairs, monkeypatch, capsys):
    """torch's writer on a full disk says '[enforce fail at inline_container.cc] unexpected pos'; the run stops with
    one line naming the checkpoint, the cause and the free space, and leaves no partial file."""
    from basicsr_sinca.utils.launch import main as launch_main

    def full_disk(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04')
        raise RuntimeError('[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4352')

    opt = _deterministic(sr_pairs, 'fulldisk', save_freq=2, total_iter=2)
    opt['path']['experiments_root'] = str(tmp_path / 'experiments')
    write_yaml(tmp_path / 'full.yml', opt)
    monkeypatch.setattr(torch, 'save', full_disk)
    assert launch_main(True, ['-opt', str(tmp_path / 'full.yml')]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'CheckpointWriteError' in last and 'net_g_2.pth: could not be written ([enforce fail' in last
    assert 'MiB free there' in last
    models = tmp_path / 'experiments' / 'fulldisk' / 'models'
    assert not list(models.iterdir())
