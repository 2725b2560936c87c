"""Foundation: a kill inside a save leaves the previous checkpoint and --auto_resume continues exactly; mid-epoch
resume; checkpoints are written atomically."""
import os
import re
import subprocess
import sys

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


# Runs the training entry with torch.save instrumented: the save whose file (the temporary one under atomic writes)
# is named for KILL_INSIDE_SAVE_OF writes the first half of its bytes, reaches the disk, and the process dies there
# (os._exit: no exception handler, no clean-up runs), as a kill -9 at that moment would leave it.
KILLING_CHILD = """
import io, os, runpy, sys
import torch

target, real_save = os.environ['KILL_INSIDE_SAVE_OF'], torch.save


def written_name(f):
    if isinstance(f, (str, os.PathLike)):
        return os.path.basename(f)
    return os.path.basename(os.readlink(f'/proc/self/fd/{f.fileno()}'))


def save(obj, f, *args, **kwargs):
    name = written_name(f)
    if name != target and not (name.startswith(f'.{target}.') and name.endswith('.tmp')):
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    handle = open(f, 'wb') if isinstance(f, (str, os.PathLike)) else f
    handle.write(data[:len(data) // 2])
    handle.flush()
    os.fsync(handle.fileno())
    os._exit(137)


torch.save = save
sys.argv = ['basicsr_sinca.train', *sys.argv[1:]]
runpy.run_module('basicsr_sinca.train', run_name='__main__')
"""


@pytest.fixture(scope='module')
def short_reference(tmp_path_factory, sr_pairs):
    """An uninterrupted run of 9 iterations saving every 3 (the epoch boundaries)."""
    cwd = tmp_path_factory.mktemp('short_reference')
    run_cmd(entry_cmd('train', '-opt', write_yaml(cwd / 'ref.yml', _deterministic(sr_pairs, 'ref', 3, 9))), cwd=cwd)
    return cwd / 'experiments' / 'ref'


@pytest.mark.parametrize('killed_in', ['net_g_6.pth', '6.state'])
def test_kill_inside_a_save_keeps_the_previous_checkpoint_and_resumes(tmp_path, sr_pairs, short_reference,
                                                                      killed_in):
    """Deterministic kill during a save (not timing-based): the process dies half-way through writing the network file
    or the training state of iteration 6. The files of iteration 3 are intact (identical to the uninterrupted run's),
    no final file of the interrupted save exists (only its hidden temporary), and --auto_resume continues from
    iteration 3 to a result bit-identical to the uninterrupted run."""
    opt_file = write_yaml(tmp_path / 'run.yml', _deterministic(sr_pairs, 'killed', save_freq=3, total_iter=9))
    script = tmp_path / 'killing_child.py'
    script.write_text(KILLING_CHILD)
    proc = subprocess.run([sys.executable, str(script), '-opt', opt_file], cwd=tmp_path,
                          env=dict(sub_env(), KILL_INSIDE_SAVE_OF=killed_in), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 137, proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'killed'
    models, states = exp / 'models', exp / 'training_states'
    folder = models if killed_in.endswith('.pth') else states
    temporaries = [p.name for p in folder.iterdir() if p.name.startswith(f'.{killed_in}.')]
    assert len(temporaries) == 1 and (folder / temporaries[0]).stat().st_size > 0  # the kill landed mid-write
    assert not (folder / killed_in).exists()  # no half-written final file
    assert not (states / '6.state').exists()  # the state of 6 is written last: never there without its networks
    for name in ('models/net_g_3.pth', 'training_states/3.state'):  # the previous checkpoint is intact
        assert_same_nested(_load(exp / name), _load(short_reference / name), name)

    proc = run_cmd(entry_cmd('train', '-opt', opt_file, '--auto_resume'), cwd=tmp_path)
    log = read_train_log(exp)
    assert re.search(r'Resuming training from epoch: \d+, iter: 3\.', log)
    assert 'Removed 1 unfinished temporary file' in log
    assert not [p for p in folder.iterdir() if p.name.startswith('.')]
    for name in ('models/net_g_9.pth', 'models/net_g_6.pth', 'training_states/9.state'):
        assert_same_nested(_load(exp / name), _load(short_reference / name), name)


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
