"""Atomic file writing: a reader (or an auto-resume) never sees a half-written file."""
import os
import tempfile
from contextlib import contextmanager
from os import path as osp

import cv2
import numpy as np
import torch

__all__ = ['atomic_open', 'atomic_torch_save', 'atomic_imwrite', 'remove_stale_temporaries', 'CheckpointWriteError']


TMP_SUFFIX = '.tmp'


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder):
    """Delete the temporary files :func:`atomic_open` leaves when its process is killed during a write
    (``.<name>.<random>.tmp``) directly in ``folder``; returns their names."""
    if not osp.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if n.startswith('.') and n.endswith(TMP_SUFFIX)]
    for name in names:
        os.remove(osp.join(folder, name))
    return names


@contextmanager
def atomic_open(path, mode='wb'):
    """Open a temporary file beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    if 'w' not in mode:
        raise ValueError(f"atomic_open: mode must write ('w'/'wb'), got {mode!r}")
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=TMP_SUFFIX, dir=folder)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what open() would give it
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the message names the file and the free space."""


def atomic_torch_save(obj, path):
    """``torch.save`` that never leaves a truncated file at ``path``.

    Raises:
        CheckpointWriteError: the write failed; instead of torch's ``[enforce fail at inline_container.cc]`` the
            message names the file, the cause and the space left on its disk.
    """
    try:
        with atomic_open(path, 'wb') as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(w in str(err).lower() for w in ('write', 'enforce fail')):
            raise
        import shutil
        try:
            free = f'{shutil.disk_usage(osp.dirname(osp.abspath(path))).free / 2**20:.0f} MiB free there'
        except OSError:
            free = 'free space unknown'
        cause = getattr(err, 'strerror', None) or str(err).strip().splitlines()[0]
        raise CheckpointWriteError(f'{path}: could not be written ({cause}; {free}); the previous file, if any, '
                                   'is unchanged') from err


def atomic_imwrite(img, path, params=None):
    """Encode ``img`` (HWC BGR or HW, uint8/uint16) by the extension of ``path`` and write it atomically.

    Raises:
        ValueError: if OpenCV cannot encode the image in that format.
    """
    ext = osp.splitext(path)[1] or '.png'
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params or [])
    if not ok:
        raise ValueError(f'cannot encode an image of shape {img.shape} and dtype {img.dtype} as {ext}: {path}')
    with atomic_open(path, 'wb') as f:
        f.write(buf.tobytes())
