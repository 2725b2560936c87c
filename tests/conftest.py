import os
import sys
from os import path as osp

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
os.environ.setdefault('OMP_NUM_THREADS', '2')


def pytest_sessionstart(session):
    """No golden folder, no test run (unless SINCA_ALLOW_MISSING_GOLDENS=1): one line says where it should be."""
    from golden import GOLDEN_DIR, OPT_OUT, missing_message
    if not osp.isdir(GOLDEN_DIR) and os.environ.get(OPT_OUT) != '1':
        pytest.exit(missing_message(GOLDEN_DIR), returncode=3)


@pytest.fixture(scope='session')
def sr_pairs(tmp_path_factory):
    """Six 64x64 GT / 32x32 LQ pairs cropped from real photos (scikit-image)."""
    from basicsr_sinca.utils.sample_data import write_sr_pairs
    root = tmp_path_factory.mktemp('sr_pairs')
    write_sr_pairs(str(root), num_per_image=2, gt_size=64, scale=2, seed=0)
    return str(root)


@pytest.fixture(scope='session')
def wheel_site(tmp_path_factory):
    """The package built as a wheel from a copy of the sources and installed (``--no-deps --target``) into a folder
    of its own; returns ``(folder, wheel path)``. Use with ``helpers.wheel_env``."""
    import shutil
    import subprocess

    from helpers import REPO
    base = tmp_path_factory.mktemp('wheel')
    src, dist, site = base / 'src', base / 'dist', base / 'site'
    src.mkdir()
    for name in ('setup.py', 'README.md', 'MANIFEST.in'):
        shutil.copy(osp.join(REPO, name), src)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for folder in ('basicsr_sinca', 'options'):
        shutil.copytree(osp.join(REPO, folder), src / folder, ignore=ignore)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '-w', str(dist), str(src)], check=True,
                   cwd=src, capture_output=True)
    (wheel, ) = dist.glob('basicsr_sinca-*.whl')
    subprocess.run([*pip, 'install', '--no-deps', '--target', str(site), str(wheel)], check=True, capture_output=True)
    return site, wheel
