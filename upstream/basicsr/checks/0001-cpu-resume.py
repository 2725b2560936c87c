"""Check for 0001: a CPU-saved state resumes without CUDA, and --auto_resume finds it from another directory.
Run as ``python 0001-cpu-resume.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
import os
import sys

import torch
from basicsr.train import load_resume_state

scratch = sys.argv[1]
states = os.path.join(scratch, 'experiments', 'run', 'training_states')
os.makedirs(states)
torch.save({'epoch': 1, 'iter': 6, 'optimizers': [], 'schedulers': []}, os.path.join(states, '6.state'))
os.chdir(os.path.join(scratch, os.pardir))  # anywhere but the root the experiments live in
opt = {'auto_resume': True, 'name': 'run', 'path': {'training_states': states, 'models': states}}
state = load_resume_state(opt)
assert state is not None and state['iter'] == 6, state
print('ok')
