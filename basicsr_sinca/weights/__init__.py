"""Weights shipped with the package (package data), each with the SHA-256 it must have.

Only the quickstart's tiny HQ priors ship here: they were trained beforehand by the package's own option files
(``options/quickstart/<task>_prior.yml``) on the training photos of the quickstart — never on its held-out photo —
and exported with ``scripts/export_quickstart_prior.py``, which also writes their line of ``SHA256SUMS`` (the
``sha256sum`` format: ``sha256sum -c SHA256SUMS`` in this folder checks them by hand).
``python -m basicsr_sinca.quickstart --train_prior`` retrains one from scratch instead of using the shipped file.
"""
import hashlib
from os import path as osp

__all__ = ['WEIGHTS_DIR', 'ChecksumError', 'read_checksums', 'sha256_of', 'shipped_weights']

WEIGHTS_DIR = osp.dirname(osp.abspath(__file__))


def read_checksums(folder=None):
    """{file name: SHA-256} from ``SHA256SUMS`` (``<hex digest>  <name>`` per line) of ``folder`` (default: the
    package's)."""
    sums = {}
    with open(osp.join(folder or WEIGHTS_DIR, 'SHA256SUMS'), encoding='utf-8') as f:
        for line in f:
            if line.strip():
                digest, name = line.split(maxsplit=1)
                sums[name.strip().lstrip('*')] = digest
    return sums


class ChecksumError(ValueError):
    """A shipped weight file whose bytes are not the ones released with the package."""


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def shipped_weights(name, folder=None):
    """Path of the shipped weight file ``name`` (in ``folder``, default: the package's), after checking its SHA-256.

    Raises:
        KeyError: ``name`` is not a shipped file.
        FileNotFoundError: the file is missing from the installation.
        ChecksumError: the file's bytes differ from the released ones (damaged or replaced).
    """
    folder = folder or WEIGHTS_DIR
    sums = read_checksums(folder)
    if name not in sums:
        raise KeyError(f'{name!r} is not shipped with basicsr_sinca (shipped: {sorted(sums)})')
    path = osp.join(folder, name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: missing from the installation; reinstall basicsr_sinca')
    actual = sha256_of(path)
    if actual != sums[name]:
        raise ChecksumError(f'{path}: SHA-256 {actual[:16]}… differs from the released {sums[name][:16]}…; '
                            'the file is damaged or was replaced — reinstall basicsr_sinca')
    return path
