"""The BasicSR patches in upstream/basicsr/ apply to the installed basicsr and fix what they say.

Each patch is applied (``git apply``) to its own copy of the installed basicsr source; its check script runs in a
subprocess with that copy first on ``PYTHONPATH`` and must pass, and the same check must fail on an unpatched
copy, so a check cannot pass without its fix.
"""
import glob
import os
import shutil
import subprocess
import sys
from os import path as osp

import pytest
from helpers import REPO, sub_env

import basicsr

PATCH_DIR = osp.join(REPO, 'upstream', 'basicsr')
PATCHES = sorted(osp.basename(p)[:-len('.patch')] for p in glob.glob(osp.join(PATCH_DIR, '*.patch')))


def _copy_basicsr(dst):
    shutil.copytree(osp.dirname(basicsr.__file__), osp.join(dst, 'basicsr'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return dst


def _run_check(name, source_root, scratch):
    os.makedirs(scratch)
    env = sub_env()
    env['PYTHONPATH'] = str(source_root)  # this copy of basicsr wins over the installed one
    return subprocess.run([sys.executable, osp.join(PATCH_DIR, 'checks', f'{name}.py'), str(scratch)], cwd=scratch,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def unpatched(tmp_path_factory):
    return _copy_basicsr(tmp_path_factory.mktemp('basicsr_unpatched'))


def test_every_patch_has_a_description_and_a_check():
    assert len(PATCHES) == 6
    for name in PATCHES:
        text = open(osp.join(PATCH_DIR, f'{name}.patch'), encoding='utf-8').read()
        description, _, diff = text.partition('\n---\n')
        assert description.startswith('Subject: [PATCH') and len(description.split()) > 60, name
        assert diff.startswith('--- a/basicsr/'), name
        assert osp.isfile(osp.join(PATCH_DIR, 'checks', f'{name}.py')), name


@pytest.mark.parametrize('name', PATCHES)
def test_patch_applies_and_its_check_passes_only_with_it(name, tmp_path, unpatched):
    patched = _copy_basicsr(tmp_path / 'patched')
    proc = subprocess.run(['git', 'apply', '-p1', osp.join(PATCH_DIR, f'{name}.patch')], cwd=patched,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with_fix = _run_check(name, patched, tmp_path / 'scratch_patched')
    assert with_fix.returncode == 0 and with_fix.stdout.strip().endswith('ok'), with_fix.stdout + with_fix.stderr
    without_fix = _run_check(name, unpatched, tmp_path / 'scratch_unpatched')
    assert without_fix.returncode != 0, f'the check of {name} passes without the patch'


def test_all_patches_apply_together(tmp_path):
    root = _copy_basicsr(tmp_path)
    for name in PATCHES:
        proc = subprocess.run(['git', 'apply', '-p1', osp.join(PATCH_DIR, f'{name}.patch')], cwd=root,
                              capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)
