import os
import sys
from os import path as osp

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
os.environ.setdefault('OMP_NUM_THREADS', '2')


@pytest.fixture(scope='session')
def sr_pairs(tmp_path_factory):
    """Six 64x64 GT / 32x32 LQ pairs cropped from real photos (scikit-image)."""
    from basicsr_sinca.utils.sample_data import write_sr_pairs
    root = tmp_path_factory.mktemp('sr_pairs')
    write_sr_pairs(str(root), num_per_image=2, gt_size=64, scale=2, seed=0)
    return str(root)
