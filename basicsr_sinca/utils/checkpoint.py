"""Loading released / trained weights with one readable report of what did not match."""
from os import path as osp

import torch

__all__ = ['read_state_dict', 'load_state_dict_report']


def read_state_dict(path, param_key='params_ema', fallback_keys=('params_ema', 'params', 'state_dict')):
    """Read a state dict from a BasicSR-style checkpoint (``{'params': ..., 'params_ema': ...}``) or a raw one.

    Loaded with ``weights_only=True`` (no code is unpickled). ``module.`` prefixes (DDP) are stripped.

    Args:
        path (str): Checkpoint file.
        param_key (str | None): Preferred key; None reads the file as a raw state dict.
        fallback_keys (tuple[str]): Keys tried, in order, when ``param_key`` is absent.

    Returns:
        tuple[dict, str | None]: The state dict and the key it was read from.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict under any of the keys.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    used = None
    if isinstance(ckpt, dict) and param_key is not None:
        for key in (param_key, ) + tuple(k for k in fallback_keys if k != param_key):
            if isinstance(ckpt.get(key), dict):
                ckpt, used = ckpt[key], key
                break
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f'{path}: no state dict under {param_key!r} or {list(fallback_keys)} (top-level keys: {keys})')
    return {(k[7:] if k.startswith('module.') else k): v for k, v in ckpt.items()}, used


def _examples(keys, n=3):
    keys = sorted(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def load_state_dict_report(net, state_dict, strict=True, source='checkpoint'):
    """Load ``state_dict`` into ``net``; summarise missing/unexpected/mis-shaped keys in one line.

    Keys whose shapes differ are never loaded. With ``strict`` any difference raises.

    Returns:
        str: The one-line report ('' when everything matched).

    Raises:
        ValueError: ``strict`` and the keys or shapes differ; the message is the report.
    """
    own = net.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    loadable = {k: v for k, v in state_dict.items() if k not in mismatched}
    result = net.load_state_dict(loadable, strict=False)
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
    return report
