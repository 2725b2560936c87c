"""Check for 0002: torchrun-style init and DDP placement without CUDA (one process, gloo).
Run as ``python 0002-cpu-distributed.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
import os
import socket

import torch
import torch.distributed as dist
from basicsr.models.base_model import BaseModel
from basicsr.utils.dist_util import init_dist

with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
init_dist('pytorch')
assert dist.is_initialized() and dist.get_backend() == ('nccl' if torch.cuda.is_available() else 'gloo')
model = BaseModel({'num_gpu': torch.cuda.device_count(), 'is_train': True, 'dist': True})
net = model.model_to_device(torch.nn.Linear(2, 2))
assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
net(torch.randn(3, 2, device=model.device)).sum().backward()
dist.destroy_process_group()
print('ok')
