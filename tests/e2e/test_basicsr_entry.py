"""BasicSR's own entry drives the plugin, from a built wheel (not the editable checkout).

The wheel (``wheel_site`` in conftest.py) is built from a copy of the sources and installed with ``pip install
--no-deps --target``; the subprocesses have only that folder on ``PYTHONPATH``, so ``basicsr_sinca`` and its
packaged option files come from the wheel, torch and basicsr from the environment. Then:

* a packaged option name resolves (``-opt train/codeformer/tiny/stage2_sinca``) and ``--print_opt`` writes the
  flat, plugin-tagged file;
* the installed ``basicsr/train.py`` file runs that file with ``--debug`` (tiny CodeFormer and FeMaSR) and trains;
* ``python -m basicsr.test`` runs a flat test file.
"""
import os
import subprocess
import sys
import zipfile
from os import path as osp

import pytest
import torch
from helpers import REPO, make_tiny_codeformer_workdir, make_tiny_femasr_workdir, run_cmd, wheel_env

import basicsr


def _run(cmd, cwd, site):
    return run_cmd(cmd, cwd, timeout=900, env=wheel_env(site))


def test_wheel_ships_package_and_option_files(wheel_site, tmp_path):
    site, wheel = wheel_site
    names = zipfile.ZipFile(wheel).namelist()
    ymls = [n for n in names if n.startswith('basicsr_sinca/options/') and n.endswith('.yml')]
    expected = sum(len([f for f in files if f.endswith('.yml')]) for _, _, files in os.walk(osp.join(REPO, 'options')))
    assert len(ymls) == expected and 'basicsr_sinca/options/codeformer_sinca.yml' in names
    assert 'basicsr_sinca/options/quickstart/blind_prior.yml' in names
    # entry-point group for a BasicSR with plugin discovery (upstream patch 0006)
    (ep, ) = [n for n in names if n.endswith('entry_points.txt')]
    assert '[basicsr.plugins]' in zipfile.ZipFile(wheel).read(ep).decode()

    proc = _run([sys.executable, '-c', 'import basicsr_sinca, sys; from basicsr_sinca.utils.options import '
                 'options_dir; print(basicsr_sinca.__file__); print(options_dir())'], tmp_path, site)
    module_file, folder = proc.stdout.split()
    assert module_file.startswith(str(site)) and folder == osp.join(str(site), 'basicsr_sinca', 'options')
    # a bare packaged name resolves; an unknown one is one line naming the entry files
    proc = _run([sys.executable, '-m', 'basicsr_sinca.train', '-opt', 'codeformer_sinca', '--print_opt'], tmp_path,
                site)
    assert 'model_type: CodeFormerStage2Model' in proc.stdout
    bad = subprocess.run([sys.executable, '-m', 'basicsr_sinca.train', '-opt', 'codeformer_sinc'], cwd=tmp_path,
                         env=wheel_env(site), capture_output=True, text=True)
    assert bad.returncode == 2 and 'codeformer_sinca' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def _flat_tiny(site, root, packaged_name, out_name):
    """Resolve a packaged tiny option file to a flat file in ``root`` (experiments kept under ``root``)."""
    proc = _run([sys.executable, '-m', 'basicsr_sinca.train', '-opt', packaged_name, '--print_opt', '--force_yml',
                 f'path:experiments_root={root}/experiments'], root, site)
    assert proc.stdout.startswith('plugins:\n- !!python/name:basicsr_sinca.__name__\n')
    (root / out_name).write_text(proc.stdout)
    return root / out_name


@pytest.mark.parametrize('baseline, packaged, make_workdir', [
    ('codeformer', 'train/codeformer/tiny/stage2_sinca', make_tiny_codeformer_workdir),
    ('femasr', 'train/femasr/tiny/x4_sinca', make_tiny_femasr_workdir),
])
def test_basicsr_train_py_runs_the_plugin(wheel_site, tmp_path, baseline, packaged, make_workdir):
    site, _ = wheel_site
    make_workdir(str(tmp_path))
    flat = _flat_tiny(site, tmp_path, packaged, f'{baseline}.yml')
    train_py = osp.join(osp.dirname(basicsr.__file__), 'train.py')  # the installed, unmodified file
    _run([sys.executable, train_py, '-opt', flat, '--debug'], tmp_path, site)

    (exp, ) = (tmp_path / 'experiments').glob('debug_*')
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'End of training' in log and 'iter:' in log
    latest = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu', weights_only=True)
    assert latest['params'] and all(torch.isfinite(v).all() for v in latest['params'].values() if v.is_floating_point())
    assert (exp / f'{baseline}.yml').is_file()  # BasicSR's own copy of the option file


def test_python_m_basicsr_test_runs_the_plugin(wheel_site, tmp_path):
    site, _ = wheel_site
    make_tiny_codeformer_workdir(str(tmp_path))
    flat = _flat_tiny(site, tmp_path, 'train/codeformer/tiny/stage2_sinca', 'train.yml')
    _run([sys.executable, '-m', 'basicsr_sinca.train', '-opt', flat, '--force_yml', 'train:total_iter=2'], tmp_path,
         site)
    ckpt = tmp_path / 'experiments' / 'tiny_CodeFormer_stage2_sinca' / 'models' / 'net_g_latest.pth'
    proc = _run([sys.executable, '-m', 'basicsr_sinca.test', '-opt', 'test/codeformer/tiny_test_sinca', '--print_opt',
                 '--force_yml', f'path:pretrain_network_g={ckpt}', f'path:results_root={tmp_path}/results'],
                tmp_path, site)
    (tmp_path / 'test.yml').write_text(proc.stdout)
    _run([sys.executable, '-m', 'basicsr.test', '-opt', tmp_path / 'test.yml'], tmp_path, site)
    (res, ) = (tmp_path / 'results').iterdir()
    assert list(res.rglob('*.png')) and '# psnr' in ''.join(p.read_text() for p in res.glob('test_*.log'))
