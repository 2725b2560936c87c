"""Access to the golden conformance cases in ../shared/conformance (or $SINCA_GOLDEN_DIR)."""
import importlib
import os
import sys
from os import path as osp

import pytest
import torch

from helpers import REPO

GOLDEN_DIR = os.environ.get('SINCA_GOLDEN_DIR') or osp.join(osp.dirname(REPO), 'shared', 'conformance')
# the goldens are the only check of strict loading of the released checkpoints: they never skip silently
OPT_OUT = 'SINCA_ALLOW_MISSING_GOLDENS'


def missing_message(path):
    return (f'golden cases not found at {path}: put the conformance cases there (../shared/conformance beside the '
            f'repository) or set SINCA_GOLDEN_DIR; {OPT_OUT}=1 skips the golden tests instead')


def load_case(name):
    path = osp.join(GOLDEN_DIR, f'{name}.pt')
    if not osp.isfile(path):
        if os.environ.get(OPT_OUT) == '1':
            pytest.skip(f'golden case {name} not found at {path} ({OPT_OUT}=1)')
        pytest.fail(missing_message(path), pytrace=False)
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


def load_basicsr_release(name, arch, tmp_path):
    """The golden weights of case ``name`` written as a BasicSR-format release file (``{'params': state_dict}``) and
    read back through the package loader into ``arch(**constructor)`` (float64, eval), strictly, checking the
    official key order. Returns ``(case, golden_init, net)``."""
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    case, golden_init = load_case(name)
    path = tmp_path / f'{name}.pth'
    torch.save({'params': golden_init.build_state_dict(case)}, path)
    net = arch(**case['constructor']).double().eval()
    loaded, _ = read_state_dict(str(path))
    assert load_state_dict_report(net, loaded, strict=True, source=str(path)) == ''
    assert list(net.state_dict()) == [n for n, _ in case['parameters']], 'official key order'
    return case, golden_init, net


def run_with_hooks(net, outputs, fn, extra=()):
    """Run ``fn()`` without gradients, capturing the forward output of every submodule named ``mod:<path>[[i]][@s<k>]``
    in ``outputs`` and of the paths in ``extra``. Returns ``(fn's result, {path: output})``."""
    seen = {}
    wanted = {k[4:].split('@')[0].split('[')[0] for k in outputs if k.startswith('mod:')} | set(extra)
    hooks = [net.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o)) for p in wanted]
    try:
        with torch.no_grad():
            result = fn()
    finally:
        for h in hooks:
            h.remove()
    return result, seen


def compare_call(name, case, semantic, seen):
    """Compare every stored output of the case's single call: plain names from ``semantic``, ``mod:`` names from the
    hooked outputs ``seen`` (``[i]``: tuple element, ``@s<k>``: stored subsampled)."""
    tol = case['tolerance']['float64_run']
    for key, ref in case['calls'][0]['outputs'].items():
        base, _, step = key.partition('@s')
        if base.startswith('mod:'):
            path, _, item = base[4:].partition('[')
            value = seen[path] if not item else seen[path][int(item.rstrip(']'))]
        else:
            value = semantic[base]
        if step:
            value = value[..., ::int(step), ::int(step)]
        assert_close(f'{name}.{key}', value, ref, tol)
