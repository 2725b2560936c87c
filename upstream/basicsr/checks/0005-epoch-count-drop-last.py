"""Check for 0005: 6 samples, batch 4, total_iter 10 -> 10 epochs of one (full) batch.
Run as ``python 0005-epoch-count-drop-last.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
import logging

from basicsr.train import create_train_val_dataloader
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils.data import Dataset


@DATASET_REGISTRY.register()
class EpochCountCheckDataset(Dataset):

    def __init__(self, opt):
        self.opt = opt

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {'index': index}


opt = {'world_size': 1, 'rank': 0, 'num_gpu': 0, 'dist': False, 'manual_seed': 0, 'train': {'total_iter': 10},
       'datasets': {'train': {'name': 'check', 'type': 'EpochCountCheckDataset', 'phase': 'train',
                              'batch_size_per_gpu': 4, 'num_worker_per_gpu': 0, 'dataset_enlarge_ratio': 1,
                              'use_shuffle': True}}}
loader, sampler, _, total_epochs, total_iters = create_train_val_dataloader(opt, logging.getLogger('check'))
assert len(loader) == 1 and total_iters == 10 and total_epochs == 10, (len(loader), total_epochs)
print('ok')
