"""Shared pieces of the inference scripts: input listing, robust image reading, network loading."""
import os
from os import path as osp

import cv2
import numpy as np
import torch

__all__ = [
    'list_inputs', 'read_image', 'read_image_layers', 'is_gray', 'build_net_from_options', 'img2input', 'output2img',
    'report_written', 'check_output_folder', 'output_stems', 'failure_message'
]

# EXIF orientation (tag 0x0112) -> what turns the stored pixels upright
_EXIF_ORIENTATION = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}


def list_inputs(path):
    """Files to process: ``path`` itself, or every file directly inside the folder ``path`` (sorted).

    Non-image files are returned too; :func:`read_image` rejects them by name, so nothing is silently ignored
    (hidden files are skipped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'input not found: {path}')
    names = [f for f in os.listdir(path) if not f.startswith('.') and osp.isfile(osp.join(path, f))]
    return sorted(osp.join(path, f) for f in names)


def read_image_layers(path):
    """Read an image as HWC BGR uint8 plus its alpha channel (HxW uint8 or None) and original bit depth.

    Gray images are expanded to 3 channels; 16-bit (and float) images are scaled to 8 bits; the EXIF orientation
    (a phone portrait stored sideways) is applied.

    Raises:
        ValueError: empty, unreadable or truncated file, or not an image; the message names the file.
    """
    if osp.getsize(path) == 0:
        raise ValueError(f'{path}: empty file')
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{path}: not a readable image')
    orientation = _check_and_orientation(path)
    if orientation in _EXIF_ORIENTATION:  # IMREAD_UNCHANGED keeps the stored pixel order
        img = _EXIF_ORIENTATION[orientation](img)
    depth = 16 if img.dtype == np.uint16 else 8
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    alpha = None
    if img.ndim == 3 and img.shape[2] == 4:
        img, alpha = img[..., :3], img[..., 3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img), alpha, depth


def _check_and_orientation(path):
    """Refuse a truncated JPEG (OpenCV decodes it with a grey band and no error); return the EXIF orientation (1 if
    none)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if im.format == 'JPEG':
                im.load()  # raises on a truncated file
    except OSError as err:
        if 'truncated' in str(err).lower():
            raise ValueError(f'{path}: truncated image file ({err})') from None
        return 1  # a format PIL does not read: OpenCV's decoding stands
    return orientation


def read_image(path):
    """Read an image as HWC BGR uint8 (alpha composited on white; see :func:`read_image_layers`)."""
    img, alpha, _ = read_image_layers(path)
    if alpha is not None:
        a = alpha[..., None].astype(np.float32) / 255.0
        img = (img.astype(np.float32) * a + 255.0 * (1 - a)).round().astype(np.uint8)
    return img


def is_gray(img, threshold=10):
    """True if every pixel's channels differ by less than ``threshold`` (a gray photo saved as colour)."""
    img = img.astype(np.int16)
    return bool(np.abs(img[..., 0] - img[..., 1]).max() < threshold
                and np.abs(img[..., 1] - img[..., 2]).max() < threshold)


def img2input(img, device, normalize=True):
    """HWC BGR uint8 -> (1, 3, H, W) RGB float tensor in [-1, 1] (``normalize``) or [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))).float().div(255.0)[None]
    return (t * 2 - 1 if normalize else t).to(device)


def output2img(tensor, min_max=(-1, 1), dtype=np.uint8):
    """(1, 3, H, W) RGB tensor in ``min_max`` -> HWC BGR ``dtype`` (uint8 or uint16; clamped)."""
    t = tensor.detach().float().cpu()[0].clamp(*min_max)
    t = (t - min_max[0]) / (min_max[1] - min_max[0])
    peak = 65535.0 if dtype == np.uint16 else 255.0
    return np.ascontiguousarray((t.numpy().transpose(1, 2, 0)[..., ::-1] * peak).round().astype(dtype))


def build_net_from_options(opt_path):
    """Build ``network_g`` of an option file (``_base_`` resolved) without loading the weight files it names (its
    ``*_path`` / ``*_paths`` keys: ``vqgan_path``, ``hq_codebook_path``, ``codebook_paths``, ...; the caller loads a
    trained checkpoint)."""
    from basicsr.archs import build_network

    import basicsr_sinca  # noqa: F401  (registers the archs)
    from basicsr_sinca.utils.options import OptionError, load_options
    opt = load_options(opt_path)
    if not isinstance(opt.get('network_g'), dict):
        raise OptionError(f'{opt_path}: no network_g section')
    net_opt = {k: v for k, v in opt['network_g'].items() if not k.endswith(('_path', '_paths'))}
    return build_network(net_opt)


def check_output_folder(output, inputs):
    """Check, before any model is loaded, that results can be written to ``output`` without touching an input.

    Raises:
        ValueError: ``output`` is (or contains) the folder of an input, or cannot be created / written (checked
            without creating anything).
    """
    out = osp.realpath(output)
    for path in inputs:
        folder = osp.dirname(osp.realpath(path))
        if folder == out or folder.startswith(out + os.sep):
            raise ValueError(f'-o {output}: holds the input {path}; results would mix with or overwrite inputs, '
                             'choose another output folder')
    existing = osp.abspath(output)
    while not osp.exists(existing):  # nothing is created before the first result
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise ValueError(f'-o {output}: cannot write there ({existing} is a file)')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f'-o {output}: cannot write there (no write permission in {existing})')


def output_stems(inputs):
    """A distinct output stem per input: its file stem, or, when stems collide (``a.jpg`` and ``a.png``), the stem
    with the extension (``a_jpg``, ``a_png``; a counter if that is taken too).

    Returns:
        tuple: ``({input path: stem}, [one line per renamed input])``.
    """
    stems = [osp.splitext(osp.basename(p))[0] for p in inputs]
    taken, result, notes = set(), {}, []
    duplicated = {s for s in stems if stems.count(s) > 1}
    for path, stem in zip(inputs, stems):
        name = stem
        if stem in duplicated:
            name = f"{stem}_{osp.splitext(path)[1].lstrip('.').lower() or 'noext'}"
        base, k = name, 2
        while name in taken or (name != stem and name in stems):
            name, k = f'{base}_{k}', k + 1
        taken.add(name)
        result[path] = name
        if name != stem:
            notes.append(f'{osp.basename(path)} shares its name with another input: written as {name}')
    return result, notes


def failure_message(path, err):
    """One line naming the input and what went wrong (out of memory included)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, ValueError) and text.startswith(path):
        return text
    return f'{path}: {type(err).__name__}: {text}'


def report_written(written, skipped, inputs, output, what='image(s) restored into', notes=()):
    """Print the summary: how many outputs were written (the count on disk), every renamed and every failed input
    (one line each). Returns the exit code: 0 when every input was written, 1 when any failed."""
    for note in notes:
        print(f'  renamed: {note}')
    print(f'{written} {what} {output}; {len(skipped)} failed')
    for msg in skipped:
        print(f'  failed: {msg}')
    return 1 if skipped else 0
