"""Super-resolution data as FeMaSR trains with it: online BSRGAN pairs and pre-generated pairs."""
import random
from os import path as osp

import cv2
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_meta_info_file, paths_from_folder
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from basicsr_sinca.data.bsrgan_degradation import degradation_bsrgan
from basicsr_sinca.data.data_util import IMG_EXTENSIONS, decode_image, make_file_client, sample_rng

__all__ = ['BSRGANTrainDataset', 'PairedResizeCropDataset']


def _where(opt, cls):
    return f"datasets.{opt.get('phase', 'train')}({opt.get('name', cls.__name__)})"


def _check_scale(opt, where):
    scale = opt.get('scale', 4)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f'{where}.scale: expected a positive integer, got {scale!r}')
    return scale


def _degradation_options(opt, where):
    """The keyword ranges of :func:`degradation_bsrgan` set in ``opt``, checked."""
    out = {}
    if opt.get('blur_scale') is not None:
        value = opt['blur_scale']
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f'{where}.blur_scale: expected a number >= 0, got {value!r}')
        out['blur_scale'] = float(value)
    for key, low, high, integer in (('down_range', 1, None, False), ('noise_range', 0, 255, True),
                                    ('jpeg_range', 1, 100, True)):
        value = opt.get(key)
        if value is None:
            continue
        ok = (isinstance(value, (list, tuple)) and len(value) == 2 and
              all(isinstance(v, int if integer else (int, float)) for v in value) and low <= value[0] <= value[1] and
              (high is None or value[1] <= high))
        if not ok:
            bound = f'{low} <= a <= b' + (f' <= {high}' if high is not None else '')
            raise ValueError(f"{where}.{key}: expected [a, b] with {bound}{' (integers)' if integer else ''}, "
                             f'got {value!r}')
        out[key] = tuple(value)
    return out


def _resize_crop_size(h, w, gt_size, scale, rng):
    """FeMaSR's resize-crop: a random target size in [gt_size, min(h, w)], floored to a multiple of scale."""
    size = int(rng.integers(gt_size, max(gt_size, min(h, w)) + 1))
    return max(gt_size, size - size % scale)


@DATASET_REGISTRY.register()
class BSRGANTrainDataset(data.Dataset):
    """HR images degraded online with BSRGAN (FeMaSR's HQ/LQ training data); tensors RGB in [0, 1].

    Args:
        opt (dict): Config. Keys: ``dataroot_gt`` (folder) or ``meta_info_file`` (names inside it);
            ``io_backend``; ``gt_size`` (HR crop, 256); ``scale`` (set from the top-level ``scale``);
            ``use_resize_crop`` (first bicubic-resize the HR image to a random size in [gt_size, side]);
            ``use_hflip``, ``use_rot``; ``seed`` (fixed per-sample degradations); the degradation's ranges
            ``blur_scale`` (1), ``down_range`` ([1, 2·scale]), ``noise_range`` ([2, 25]) and ``jpeg_range``
            ([30, 95]) — BSRGAN's by default (see :func:`degradation_bsrgan`).

    Returns (per item):
        dict: ``lq`` (3, gt_size/scale, gt_size/scale), ``gt`` (3, gt_size, gt_size), ``lq_path``, ``gt_path``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.where = _where(opt, type(self))
        self.scale = _check_scale(opt, self.where)
        self.gt_size = int(opt.get('gt_size', 256))
        if self.gt_size % self.scale:
            raise ValueError(f'{self.where}.gt_size: {self.gt_size} is not a multiple of scale {self.scale}')
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.file_client = None
        self.seed = opt.get('seed')
        self.degradation_opt = _degradation_options(opt, self.where)
        folder = opt['dataroot_gt']
        if opt.get('meta_info_file'):
            with open(opt['meta_info_file']) as f:
                self.paths = [osp.join(folder, line.strip().split(' ')[0]) for line in f if line.strip()]
        else:
            self.paths = sorted(p for p in paths_from_folder(folder) if p.lower().endswith(IMG_EXTENSIONS))
        if not self.paths:
            raise ValueError(f'{self.where}.dataroot_gt: no images found in {folder}')

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if self.file_client is None:
            self.file_client = make_file_client(self.io_backend_opt)
        rng = sample_rng(self.seed, index)
        path = self.paths[index]
        img = decode_image(self.file_client.get(path, 'gt'), path, self.where)
        h, w = img.shape[:2]
        if min(h, w) < self.gt_size:
            raise ValueError(f'{self.where}: {path} is {h}x{w}, smaller than gt_size {self.gt_size}')
        if self.opt.get('use_resize_crop'):
            size = _resize_crop_size(h, w, self.gt_size, self.scale, rng)
            ratio = size / min(h, w)
            img = cv2.resize(img, (max(self.gt_size, round(w * ratio)), max(self.gt_size, round(h * ratio))),
                             interpolation=cv2.INTER_CUBIC).clip(0, 1)
            h, w = img.shape[:2]
        top, left = int(rng.integers(0, h - self.gt_size + 1)), int(rng.integers(0, w - self.gt_size + 1))
        img = img[top:top + self.gt_size, left:left + self.gt_size]
        lq, gt = degradation_bsrgan(img, self.scale, rng, **self.degradation_opt)
        if self.opt.get('use_hflip') or self.opt.get('use_rot'):
            random.seed(int(rng.integers(0, 2**31 - 1)))  # BasicSR's augment draws from Python's `random`
            gt, lq = augment([gt, lq], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        gt, lq = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        return {'lq': lq.clamp(0, 1), 'gt': gt, 'lq_path': path, 'gt_path': path}


@DATASET_REGISTRY.register()
class PairedResizeCropDataset(data.Dataset):
    """Pre-generated LR/HR pairs with FeMaSR's training augmentation; tensors RGB in [0, 1].

    Pairs by file name (BasicSR's ``paired_paths_from_folder`` with ``filename_tmpl``, or a
    ``meta_info_file``). In training, ``use_resize_crop`` first resizes both images by one random factor
    (HR side in [gt_size, side], a multiple of scale), then takes a paired random ``gt_size`` crop
    (``gt_size: ~`` keeps whole images); flips/rotations with ``use_hflip`` / ``use_rot``. Validation/test
    phases return whole images (HR cropped to scale x LR if they disagree by a modcrop).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.where = _where(opt, type(self))
        self.scale = _check_scale(opt, self.where)
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.file_client = None
        self.seed = opt.get('seed')
        folders, keys = [opt['dataroot_lq'], opt['dataroot_gt']], ['lq', 'gt']
        tmpl = opt.get('filename_tmpl', '{}')
        if opt.get('meta_info_file'):
            self.paths = paired_paths_from_meta_info_file(folders, keys, opt['meta_info_file'], tmpl)
        else:
            try:
                self.paths = paired_paths_from_folder(folders, keys, tmpl)
            except AssertionError as err:  # BasicSR asserts on a missing LQ partner
                raise ValueError(f'{self.where}: {err}') from None
        if not self.paths:
            raise ValueError(f"{self.where}.dataroot_gt: no images found in {opt['dataroot_gt']}")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if self.file_client is None:
            self.file_client = make_file_client(self.io_backend_opt)
        rng = sample_rng(self.seed, index)
        paths = self.paths[index]
        gt = decode_image(self.file_client.get(paths['gt_path'], 'gt'), paths['gt_path'], self.where)
        lq = decode_image(self.file_client.get(paths['lq_path'], 'lq'), paths['lq_path'], self.where)
        s = self.scale
        gt = gt[:lq.shape[0] * s, :lq.shape[1] * s]
        if gt.shape[0] != lq.shape[0] * s or gt.shape[1] != lq.shape[1] * s:
            raise ValueError(f"{self.where}: {paths['gt_path']} ({gt.shape[1]}x{gt.shape[0]}) is not {s}x "
                             f"{paths['lq_path']} ({lq.shape[1]}x{lq.shape[0]})")
        if self.opt.get('phase', 'train') == 'train':
            gt_size = self.opt.get('gt_size')
            random.seed(int(rng.integers(0, 2**31 - 1)))  # BasicSR's crop/augment draw from Python's `random`
            if gt_size:
                if self.opt.get('use_resize_crop'):
                    h, w = gt.shape[:2]
                    ratio = _resize_crop_size(h, w, gt_size, s, rng) / min(h, w)
                    lw = max(gt_size // s, round(lq.shape[1] * ratio))
                    lh = max(gt_size // s, round(lq.shape[0] * ratio))
                    gt = cv2.resize(gt, (lw * s, lh * s), interpolation=cv2.INTER_CUBIC).clip(0, 1)
                    lq = cv2.resize(lq, (lw, lh), interpolation=cv2.INTER_CUBIC).clip(0, 1)
                gt, lq = paired_random_crop(gt, lq, gt_size, s, paths['gt_path'])
            gt, lq = augment([gt, lq], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        gt, lq = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': paths['lq_path'], 'gt_path': paths['gt_path']}
