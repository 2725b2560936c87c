"""Loading released / trained weights with one readable report of what did not match.

Every user-supplied checkpoint of the package is read by :func:`read_state_dict`, with ``weights_only=True``:
no code of the file is run. PyTorch Lightning checkpoints (DAEFR, RestoreFormer releases) also pickle trainer
objects (callback classes, hyper-parameter containers); :func:`load_untrusted` replaces those by inert
placeholders instead of importing them, then the module's ``state_dict`` is taken and its training-loss keys
(``loss.*``) are dropped, which the report says.
"""
import pickle
from os import path as osp

import torch

__all__ = ['read_state_dict', 'load_state_dict_report', 'load_untrusted', 'OpaqueObject']

LIGHTNING_LOSS_PREFIX = 'loss.'


class OpaqueObject:
    """What an unknown global of an untrusted checkpoint becomes: it accepts anything and runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def load_untrusted(path, allowed_globals=None):
    """``torch.load(path, weights_only=True)``, whatever torch's default; a file that pickles other globals
    (Lightning's trainer state) is read again with each of them mapped to :class:`OpaqueObject` (needs torch >= 2.5),
    so none is imported or called.

    Args:
        path (str): The file.
        allowed_globals (list, optional): Classes/functions the file may reconstruct as they are (e.g. NumPy's
            array reconstruction); with this list any other global is refused instead of made opaque.

    Raises:
        pickle.UnpicklingError: the file cannot be read safely (the message says why).
    """
    if allowed_globals is not None:
        try:
            with torch.serialization.safe_globals(list(allowed_globals)):
                return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f'{path}: refused: {str(err).splitlines()[0]}') from None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe_globals = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
        if unsafe_globals is None or not hasattr(torch.serialization, 'safe_globals'):
            raise pickle.UnpicklingError(f'{path}: holds objects other than tensors; reading it safely needs torch >= '
                                         f'2.5 ({str(err).splitlines()[0]})') from None
        names = unsafe_globals(path)
        try:
            with torch.serialization.safe_globals([(OpaqueObject, name) for name in names]):
                return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError:  # e.g. a global of a module torch never lets through (os, subprocess)
            raise pickle.UnpicklingError(f'{path}: refused: it references {sorted(names)}, which are not weights '
                                         '(not loaded)') from None


def _is_lightning(ckpt):
    return isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict) and (
        'pytorch-lightning_version' in ckpt or 'global_step' in ckpt)


def read_state_dict(path, param_key='params_ema', fallback_keys=('params_ema', 'params', 'state_dict')):
    """Read a state dict from a BasicSR-style checkpoint (``{'params': ..., 'params_ema': ...}``), a PyTorch Lightning
    checkpoint (its ``state_dict`` without the ``loss.*`` keys) or a raw one.

    Loaded with :func:`load_untrusted` (no code is run). ``module.`` prefixes (DDP) are stripped.

    Args:
        path (str): Checkpoint file.
        param_key (str | None): Preferred key; None reads the file as a raw state dict.
        fallback_keys (tuple[str]): Keys tried, in order, when ``param_key`` is absent.

    Returns:
        tuple[dict, str | None]: The state dict and where it was read from (the key; for a Lightning file also how
        many ``loss.*`` keys were dropped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict under any of the keys.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = load_untrusted(path)
    used = None
    if _is_lightning(ckpt):
        state_dict = ckpt['state_dict']
        dropped = [k for k in state_dict if k.startswith(LIGHTNING_LOSS_PREFIX)]
        ckpt = {k: v for k, v in state_dict.items() if k not in dropped}
        used = f'state_dict (Lightning; {len(dropped)} {LIGHTNING_LOSS_PREFIX}* keys dropped)'
    elif isinstance(ckpt, dict) and param_key is not None:
        for key in (param_key, ) + tuple(k for k in fallback_keys if k != param_key):
            if isinstance(ckpt.get(key), dict):
                ckpt, used = ckpt[key], key
                break
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        tried = f'{param_key!r}' + (f' or {list(fallback_keys)}' if fallback_keys else '')
        raise ValueError(f'{path}: no state dict under {tried} (top-level keys: {keys})')
    return {(k[7:] if k.startswith('module.') else k): v for k, v in ckpt.items()}, used


def _examples(keys, n=3):
    keys = sorted(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def load_state_dict_report(net, state_dict, strict=True, source='checkpoint'):
    """Load ``state_dict`` into ``net``; summarise missing/unexpected/mis-shaped keys in one line.

    Keys whose shapes differ are never loaded. With ``strict`` any difference raises. Without it, differences are
    reported with what came from the file per top-level part (``encoder 52/52, transformer 0/40``), and loading
    still fails when nothing of the network loads (e.g. another baseline's weights) or when a part whose keys the
    file has by name loads none of them (e.g. a codebook of another size); a part the file lacks, or holds under
    other names (a new bottleneck), is reported as not loaded.

    Returns:
        str: The one-line report ('' when everything matched).

    Raises:
        ValueError: ``strict`` and the keys or shapes differ, or nothing / a shared part loads; the message is the
            report.
    """
    own = net.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    loadable = {k: v for k, v in state_dict.items() if k not in mismatched}
    try:
        result = net.load_state_dict(loadable, strict=False)
    except RuntimeError as err:  # a shape mismatch behind a key the network renames on load
        raise ValueError(f'{source} does not match {type(net).__name__}: {str(err).strip().splitlines()[-1].strip()}')

    parts = []
    missing = [k for k in result.missing_keys if k not in mismatched]  # mis-shaped keys are reported as such
    if missing:
        parts.append(f'{len(missing)} missing keys ({_examples(missing)})')
    if result.unexpected_keys:
        parts.append(f'{len(result.unexpected_keys)} unexpected keys ({_examples(result.unexpected_keys)})')
    if mismatched:
        k = sorted(mismatched)[0]
        parts.append(f'{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state_dict[k].shape)} vs model '
                     f'{tuple(own[k].shape)})')
    report = f'{source} does not match {type(net).__name__}: ' + '; '.join(parts) if parts else ''
    if strict and report:
        raise ValueError(report)
    if report:
        not_loaded = set(result.missing_keys) | set(mismatched)
        per_part = {}
        for key in own:
            loaded, total = per_part.get(key.split('.')[0], (0, 0))
            per_part[key.split('.')[0]] = (loaded + (key not in not_loaded), total + 1)
        report += '; loaded from the file: ' + ', '.join(f'{p} {n}/{t}' for p, (n, t) in per_part.items())
        if not any(n for n, _ in per_part.values()):
            raise ValueError(f'nothing loaded (is it the right file?): {report}')
        # a part whose keys the file has by name, none of which loads (e.g. a codebook of another size)
        shared = {k.split('.')[0] for k in own if k in state_dict}
        dead = [p for p, (n, _) in per_part.items() if n == 0 and p in shared]
        if dead:
            raise ValueError(f"{', '.join(dead)}: in the file but none of its keys load: {report}")
    return report
