"""Check for 0003: a save that fails half-way leaves the previous file intact and no temporary file.
Run as ``python 0003-atomic-checkpoints.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
import os
import sys
import types

import torch
import basicsr.models.base_model as base_model

folder = sys.argv[1]
model = base_model.BaseModel({'num_gpu': 0, 'is_train': True, 'dist': False,
                              'path': {'models': folder, 'training_states': folder}})
model.save_network(torch.nn.Linear(2, 2), 'net_g', 5)
model.save_training_state(1, 5)
before = {name: open(os.path.join(folder, name), 'rb').read() for name in ('net_g_5.pth', '5.state')}


def failing_save(obj, f, *args, **kwargs):  # writes part of a file, then the disk is "full"
    with open(f, 'wb') as handle:
        handle.write(b'PK\x03\x04 partial')
    raise OSError('No space left on device')


torch.save = failing_save
base_model.time = types.SimpleNamespace(sleep=lambda seconds: None)  # skip the retry waits
model.save_network(torch.nn.Linear(2, 2), 'net_g', 5)
model.save_training_state(1, 5)
after = {name: open(os.path.join(folder, name), 'rb').read() for name in ('net_g_5.pth', '5.state')}
assert after == before, 'a failed save changed the existing files'
assert sorted(os.listdir(folder)) == ['5.state', 'net_g_5.pth'], os.listdir(folder)
print('ok')
