"""The process's random number generators as one state: saved with training states, restored on resume.

Python's ``random`` (BasicSR's flips and crops), NumPy's global generator (degradations) and torch's CPU and
CUDA generators (noise, dropout, initialisation) are all captured. The state holds only tensors, ints, strings
and tuples, so it loads with ``weights_only=True``.
"""
import random
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ['get_rng_state', 'set_rng_state', 'preserved_rng']


def get_rng_state():
    """The state of every global generator of this process.

    Returns:
        dict: ``python``, ``numpy``, ``torch`` and, with CUDA, ``cuda`` (one state per device).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore a state of :func:`get_rng_state` (CUDA states only if this process has as many devices)."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def preserved_rng():
    """Run a block (e.g. a validation) without moving any global generator: the state is restored afterwards."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
