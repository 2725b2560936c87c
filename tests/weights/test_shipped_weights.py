"""The shipped weights: every file of SHA256SUMS is present and verified on load; a changed byte is refused."""
import hashlib
import shutil

import pytest
import torch

import basicsr_sinca.weights as weights
from basicsr_sinca.quickstart import TASKS


def test_every_quickstart_prior_ships_with_its_checksum():
    sums = weights.read_checksums()
    assert set(sums) == {spec['shipped_prior'] for spec in TASKS.values()}
    for name, digest in sums.items():
        path = weights.shipped_weights(name)
        with open(path, 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
        state = torch.load(path, map_location='cpu', weights_only=True)
        assert list(state) == ['params_ema'] and state['params_ema']
        assert weights.osp.getsize(path) < 5e6  # "a few MB at most"


def test_a_damaged_or_replaced_file_is_refused(tmp_path):
    for name in weights.read_checksums():
        shutil.copy(weights.osp.join(weights.WEIGHTS_DIR, name), tmp_path / name)
    shutil.copy(weights.osp.join(weights.WEIGHTS_DIR, 'SHA256SUMS'), tmp_path / 'SHA256SUMS')
    name = sorted(weights.read_checksums(str(tmp_path)))[0]
    assert weights.shipped_weights(name, str(tmp_path)) == str(tmp_path / name)
    data = bytearray((tmp_path / name).read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(weights.ChecksumError, match=r'SHA-256 .* differs from the released .*reinstall'):
        weights.shipped_weights(name, str(tmp_path))
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match='missing from the installation'):
        weights.shipped_weights(name, str(tmp_path))
    with pytest.raises(KeyError, match='not shipped'):
        weights.shipped_weights('other.pth', str(tmp_path))
