"""Access to the golden conformance cases in ../shared/conformance (or $SINCA_GOLDEN_DIR)."""
import importlib
import os
import sys
from os import path as osp

import pytest
import torch

from helpers import REPO

GOLDEN_DIR = os.environ.get('SINCA_GOLDEN_DIR') or osp.join(osp.dirname(REPO), 'shared', 'conformance')


def load_case(name):
    path = osp.join(GOLDEN_DIR, f'{name}.pt')
    if not osp.isfile(path):
        pytest.skip(f'golden case {name} not found at {path} (set SINCA_GOLDEN_DIR)')
    if GOLDEN_DIR not in sys.path:
        sys.path.insert(0, GOLDEN_DIR)
    golden_init = importlib.import_module('golden_init')
    case = torch.load(path, weights_only=True)
    return case, golden_init


def assert_close(name, ours, stored, tol):
    """Elementwise |ours - stored| <= atol + rtol·|stored| (float), exact equality (integer)."""
    ours = ours.detach().cpu()
    assert tuple(ours.shape) == tuple(stored.shape), f'{name}: shape {tuple(ours.shape)} vs {tuple(stored.shape)}'
    if not stored.is_floating_point():
        mismatch = (ours.to(stored.dtype) != stored).nonzero()
        assert mismatch.numel() == 0, f'{name}: {len(mismatch)} indices differ, first at {mismatch[:5].tolist()}'
        return 0.0
    stored64 = stored.double()
    err = (ours.double() - stored64).abs()
    bound = tol['atol'] + tol['rtol'] * stored64.abs()
    worst = (err - bound).max().item()
    assert worst <= 0, f'{name}: max abs error {err.max().item():.3g} exceeds atol {tol["atol"]} + rtol {tol["rtol"]}'
    return err.max().item()
