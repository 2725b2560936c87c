"""Check for 0004: a sampler started mid-epoch yields the rest of the uninterrupted epoch, then full epochs.
Run as ``python 0004-mid-epoch-resume.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
from basicsr.data.data_sampler import EnlargedSampler

data = list(range(10))
uninterrupted = EnlargedSampler(data, 1, 0, ratio=2)
resumed = EnlargedSampler(data, 1, 0, ratio=2)
resumed.set_start(3, 8)
for epoch in (3, 4):
    uninterrupted.set_epoch(epoch)
    resumed.set_epoch(epoch)
    expected = list(uninterrupted)[8:] if epoch == 3 else list(uninterrupted)
    assert list(resumed) == expected and len(resumed) == len(expected), epoch
print('ok')
