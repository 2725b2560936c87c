"""CodeFormer's blind face degradation: blur -> downsample -> noise -> JPEG -> resize back.

Option keys follow CodeFormer's ``FFHQBlindDataset`` / ``FFHQBlindJointDataset``, so existing option files
work. Degradation parameters are drawn from a per-sample ``numpy.random.Generator``: with ``seed`` set, a
sample's LQ depends only on (seed, index) — fixed validation sets and reproducible runs; without it the
generator is seeded from NumPy's global state, which BasicSR seeds per worker from ``manual_seed``.
"""
import math
from os import path as osp

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from basicsr_sinca.data.data_util import IMG_EXTENSIONS, decode_image, jpeg_compress, make_file_client, sample_rng

__all__ = ['FFHQBlindDataset', 'FFHQBlindJointDataset', 'BlindDegradation']


def _check_range(name, value, low, high, what):
    """A [min, max] pair inside [low, high] with min <= max, else a ValueError naming the key."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
          and low <= value[0] <= value[1] <= high)
    if not ok:
        raise ValueError(f'{name}: expected [min, max] with {low} <= min <= max <= {high} ({what}), got {value!r}')
    return [float(value[0]), float(value[1])]


def _check_prob(name, value):
    if value is None:
        return 0.0
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f'{name}: expected a probability in [0, 1], got {value!r}')
    return float(value)


class BlindDegradation:
    """One parameter set of the blind pipeline (ranges checked on construction).

    Args:
        where (str): Prefix for error messages (e.g. ``'datasets.train'``).
        blur_kernel_size (int | list[int]): Odd kernel size, or a list to draw from per sample (DAEFR: [39, 41]).
            Default: 41.
        kernel_list / kernel_prob: Kernel types ('iso', 'aniso') and their probabilities. Default: 0.5 / 0.5.
        blur_sigma (list): Gaussian sigma range (pixels).
        downsample_range (list): Downsampling factor range (> 0; below 1 enlarges, as DAEFR's 0.8).
        noise_range (list): Gaussian noise sigma range on the 0-255 scale.
        jpeg_range (list): JPEG quality range (1-100).
        suffix (str): Suffix of the option keys, for error messages (``'_large'``).
    """

    def __init__(self, where, blur_sigma, downsample_range, noise_range, jpeg_range, blur_kernel_size=41,
                 kernel_list=('iso', 'aniso'), kernel_prob=(0.5, 0.5), suffix=''):
        sizes = blur_kernel_size if isinstance(blur_kernel_size, (list, tuple)) else [blur_kernel_size]
        if not sizes or not all(isinstance(k, int) and k >= 1 and k % 2 for k in sizes):
            raise ValueError(f'{where}.blur_kernel_size: expected an odd positive integer or a list of them, got '
                             f'{blur_kernel_size!r}')
        unknown = [k for k in kernel_list if k not in ('iso', 'aniso')]
        if unknown or len(kernel_list) != len(kernel_prob) or abs(sum(kernel_prob) - 1) > 1e-6:
            raise ValueError(f"{where}.kernel_list/kernel_prob: expected kernels from ['iso', 'aniso'] with "
                             f'probabilities summing to 1, got {list(kernel_list)} / {list(kernel_prob)}')
        self.kernel_sizes = list(sizes)
        self.kernel_list, self.kernel_prob = list(kernel_list), [float(p) for p in kernel_prob]
        self.blur_sigma = _check_range(f'{where}.blur_sigma{suffix}', blur_sigma, 1e-3, 100, 'blur sigma in pixels')
        self.downsample_range = _check_range(f'{where}.downsample_range{suffix}', downsample_range, 0.1, 256,
                                             'scale factor; below 1 enlarges')
        self.noise_range = _check_range(f'{where}.noise_range{suffix}', noise_range, 0, 255, 'noise sigma on 0-255')
        self.jpeg_range = _check_range(f'{where}.jpeg_range{suffix}', jpeg_range, 1, 100, 'JPEG quality')

    def sample(self, rng):
        """Draw one set of degradation parameters."""
        kernel = self.kernel_list[rng.choice(len(self.kernel_list), p=self.kernel_prob)]
        size = self.kernel_sizes[0] if len(self.kernel_sizes) == 1 else int(rng.choice(self.kernel_sizes))
        return {
            'kernel': kernel,
            'kernel_size': size,
            'sigma_x': rng.uniform(*self.blur_sigma),
            'sigma_y': rng.uniform(*self.blur_sigma),
            'theta': rng.uniform(-math.pi, math.pi),
            'scale': rng.uniform(*self.downsample_range),
            'noise': rng.uniform(*self.noise_range),
            'jpeg': int(rng.uniform(*self.jpeg_range)),
        }

    def apply(self, img, params, out_size, rng):
        """Degrade an HWC float32 [0, 1] image and resize it to ``out_size`` (square)."""
        iso = params['kernel'] == 'iso'
        kernel = bivariate_Gaussian(params['kernel_size'], params['sigma_x'], params['sigma_y'], params['theta'],
                                    isotropic=iso)
        lq = cv2.filter2D(img, -1, kernel)
        h, w = img.shape[:2]
        small = (max(1, int(w // params['scale'])), max(1, int(h // params['scale'])))
        lq = cv2.resize(lq, small, interpolation=cv2.INTER_LINEAR)
        if params['noise'] > 0:
            lq = lq + rng.standard_normal(lq.shape).astype(np.float32) * (params['noise'] / 255.0)
        lq = np.clip(lq, 0, 1)
        lq = jpeg_compress(lq, params['jpeg'])
        return cv2.resize(lq, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def read_component_landmarks(path):
    """Facial-component landmarks from ``.json`` or a torch file, read with ``weights_only`` (numpy arrays in the file
    are allowed: array reconstruction runs no code of the file)."""
    import json
    if not osp.isfile(path):
        raise ValueError(f'component_path: file not found: {path} (GFPGAN\'s FFHQ_eye_mouth_landmarks_512.pth)')
    if path.lower().endswith('.json'):
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    import importlib
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if any(not n.startswith('numpy.') for n in names):
        raise ValueError(f'component_path: {path} holds objects other than tensors, lists and numpy arrays: '
                         f'{sorted(n for n in names if not n.startswith("numpy."))}')
    allowed = [np.ndarray, np.dtype] + [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    for name in names:
        module, _, attr = name.rpartition('.')
        allowed.append(getattr(importlib.import_module(module), attr))
    from basicsr_sinca.utils.checkpoint import load_untrusted
    return load_untrusted(path, allowed_globals=allowed)


@DATASET_REGISTRY.register()
class FFHQBlindDataset(data.Dataset):
    """Aligned faces with CodeFormer's on-the-fly blind degradation; tensors in [-1, 1] (mean = std = 0.5).

    Args:
        opt (dict): Config. Keys:
            dataroot_gt (str): Folder, or ``.lmdb`` with ``io_backend.type: lmdb``.
            meta_info_file (str, optional): List of GT file names (first token per line) inside dataroot_gt.
            io_backend (dict): BasicSR file client options.
            gt_size / in_size (int): GT and LQ side (both 512 for CodeFormer). GT images of another size are
                resized.
            mean / std (list): Normalisation. Default: [0.5] * 3.
            use_hflip (bool): Random horizontal flip (train phase only). Default: True.
            use_corrupt (bool): Degrade (else LQ = GT). Default: True.
            blur_kernel_size, kernel_list, kernel_prob, blur_sigma, downsample_range, noise_range, jpeg_range:
                see :class:`BlindDegradation`; defaults are CodeFormer's stage-2 ranges.
            color_jitter_prob (float): LQ-only colour shift of ±color_jitter_shift/255. Default: 0.
            color_jitter_pt_prob (float): LQ-only brightness/contrast/saturation/hue jitter. Default: 0.
            gray_prob (float): LQ converted to gray. Default: 0. ``gt_gray: true`` also grays the GT.
            seed (int, optional): Fixed per-sample degradations (see module docstring).
            crop_components (bool): Also return facial-component boxes (RestoreFormer / GFPGAN component
                discriminators). Default: False. Needs ``component_path``: landmarks of the 512 px faces,
                ``{key: {'left_eye' | 'right_eye' | 'mouth': [x, y, half_size]}}`` (GFPGAN's
                ``FFHQ_eye_mouth_landmarks_512.pth``, read without running code, or the same as ``.json``), keyed
                by the image's file stem, else by the zero-padded number ``%08d`` of the stem or of the sample's
                index. ``eye_enlarge_ratio`` (default 1.4) widens the eye boxes.

    Returns (per item):
        dict: ``lq`` (3, in_size, in_size), ``gt`` (3, gt_size, gt_size), ``gt_path``, ``lq_path``; with
        ``crop_components`` also ``loc_left_eye``, ``loc_right_eye``, ``loc_mouth``: (4,) boxes
        ``[x1, y1, x2, y2]`` in GT pixels (eyes swapped and mirrored with the flip).
    """

    # defaults: CodeFormer stage 2 (and the "large" degradation of stage 3)
    default_ranges = {
        'blur_sigma': [1, 15],
        'downsample_range': [4, 30],
        'noise_range': [0, 20],
        'jpeg_range': [30, 80]
    }

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.where = f"datasets.{opt.get('phase', 'train')}({opt.get('name', type(self).__name__)})"
        self.gt_folder = opt['dataroot_gt']
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.file_client = None
        self.gt_size = int(opt.get('gt_size', 512))
        self.in_size = int(opt.get('in_size', self.gt_size))
        self.mean = opt.get('mean', [0.5, 0.5, 0.5])
        self.std = opt.get('std', [0.5, 0.5, 0.5])
        self.use_hflip = bool(opt.get('use_hflip', True)) and opt.get('phase', 'train') == 'train'
        self.use_corrupt = bool(opt.get('use_corrupt', True))
        self.seed = opt.get('seed')
        self.components = None  # landmarks, read on first use (crop_components)
        self.degradation = self.build_degradation(opt, self.default_ranges, '')
        self.color_jitter_prob = _check_prob(f'{self.where}.color_jitter_prob', opt.get('color_jitter_prob'))
        self.color_jitter_shift = float(opt.get('color_jitter_shift', 20)) / 255.0
        self.color_jitter_pt_prob = _check_prob(f'{self.where}.color_jitter_pt_prob',
                                                opt.get('color_jitter_pt_prob'))
        self.gray_prob = _check_prob(f'{self.where}.gray_prob', opt.get('gray_prob'))
        self.gt_gray = bool(opt.get('gt_gray', False))
        self.paths = self.list_paths()

    def build_degradation(self, opt, defaults, suffix):
        """A :class:`BlindDegradation` from the range keys ``blur_sigma{suffix}``, ... (defaults if absent)."""
        return BlindDegradation(
            self.where, blur_kernel_size=opt.get('blur_kernel_size', 41),
            kernel_list=opt.get('kernel_list', ['iso', 'aniso']), kernel_prob=opt.get('kernel_prob', [0.5, 0.5]),
            suffix=suffix, **{k: opt.get(k + suffix, v) for k, v in defaults.items()})

    def list_paths(self):
        backend = self.io_backend_opt.get('type', 'disk')
        if backend == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            paths = paths_from_lmdb(self.gt_folder)
        elif self.opt.get('meta_info_file'):
            with open(self.opt['meta_info_file']) as f:
                names = [line.strip().split(' ')[0] for line in f if line.strip()]
            paths = [osp.join(self.gt_folder, n) for n in names]
        else:
            paths = sorted(p for p in paths_from_folder(self.gt_folder) if p.lower().endswith(IMG_EXTENSIONS))
        if not paths:
            raise ValueError(f'{self.where}.dataroot_gt: no images found in {self.gt_folder}')
        return paths

    def __len__(self):
        return len(self.paths)

    def read_gt(self, index):
        """GT as HWC BGR float32 [0, 1] of ``gt_size`` and its path."""
        if self.file_client is None:
            self.file_client = make_file_client(self.io_backend_opt)
        path = self.paths[index]
        img = decode_image(self.file_client.get(path, 'gt'), path, self.where)
        if img.shape[:2] != (self.gt_size, self.gt_size):
            img = cv2.resize(img, (self.gt_size, self.gt_size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img), path

    def make_lq(self, img_gt, degradation, rng):
        """GT -> normalised LQ tensor of ``in_size`` (degradation and optional colour changes); also whether
        the LQ was turned gray."""
        if self.use_corrupt:
            lq = degradation.apply(img_gt, degradation.sample(rng), self.in_size, rng)
        else:
            lq = cv2.resize(img_gt, (self.in_size, self.in_size), interpolation=cv2.INTER_LINEAR)
        if self.color_jitter_prob and rng.uniform() < self.color_jitter_prob:
            shift = rng.uniform(-self.color_jitter_shift, self.color_jitter_shift, 3).astype(np.float32)
            lq = np.clip(lq + shift, 0, 1)
        grayed = bool(self.gray_prob) and rng.uniform() < self.gray_prob
        if grayed:
            lq = np.repeat(cv2.cvtColor(lq, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2)
        t = img2tensor(lq, bgr2rgb=True, float32=True)
        if self.color_jitter_pt_prob and rng.uniform() < self.color_jitter_pt_prob:
            t = self.jitter(t, rng)
        t = torch.round(t.clamp(0, 1) * 255) / 255  # LQ on 8-bit levels, like a saved image
        return TF.normalize(t, self.mean, self.std), grayed

    @staticmethod
    def jitter(t, rng):
        """Brightness (0.5, 1.5), contrast (0.5, 1.5), saturation (0, 1.5), hue (-0.1, 0.1) in random order."""
        ops = [
            lambda x: TF.adjust_brightness(x, rng.uniform(0.5, 1.5)),
            lambda x: TF.adjust_contrast(x, rng.uniform(0.5, 1.5)),
            lambda x: TF.adjust_saturation(x, rng.uniform(0, 1.5)),
            lambda x: TF.adjust_hue(x, rng.uniform(-0.1, 0.1)),
        ]
        for i in rng.permutation(len(ops)):
            t = ops[i](t)
        return t.clamp(0, 1)

    def load(self, index):
        """GT image (flipped at random in training), its path and the sample's generator; the flip is kept in
        ``self.flipped`` for the component boxes."""
        rng = sample_rng(self.seed, index)
        img_gt, path = self.read_gt(index)
        self.flipped = self.use_hflip and rng.uniform() < 0.5
        if self.flipped:
            img_gt = np.ascontiguousarray(img_gt[:, ::-1])
        return img_gt, path, rng

    def component_boxes(self, index, path, flipped):
        """``{'loc_left_eye', 'loc_right_eye', 'loc_mouth'}`` boxes of sample ``index`` (see the class docstring)."""
        if self.components is None:
            if not self.opt.get('component_path'):
                raise ValueError(f'{self.where}.component_path: crop_components needs the landmark file '
                                 '(FFHQ_eye_mouth_landmarks_512.pth)')
            self.components = read_component_landmarks(self.opt['component_path'])
        stem = osp.splitext(osp.basename(path))[0]
        keys = [stem] + ([f'{int(stem):08d}'] if stem.isdigit() else []) + [f'{index:08d}']
        entry = next((self.components[k] for k in keys if k in self.components), None)
        if entry is None:
            raise ValueError(f"{self.where}.component_path: no landmarks for {path} (looked for {', '.join(keys)})")
        parts = {name: [float(v) for v in entry[name]] for name in ('left_eye', 'right_eye', 'mouth')}
        if flipped:  # the left eye becomes the right one, x mirrored
            parts = {'left_eye': parts['right_eye'], 'right_eye': parts['left_eye'], 'mouth': parts['mouth']}
            parts = {name: [512 - x, y, h] for name, (x, y, h) in parts.items()}
        scale, ratio = self.gt_size / 512, float(self.opt.get('eye_enlarge_ratio', 1.4))
        boxes = {}
        for name, (x, y, half) in parts.items():
            half = half * (ratio if name.endswith('eye') else 1.0)
            boxes[f'loc_{name}'] = torch.tensor([x - half, y - half, x + half, y + half], dtype=torch.float32) * scale
        return boxes

    def gt_tensor(self, img_gt, gray):
        if gray and self.gt_gray:
            img_gt = np.repeat(cv2.cvtColor(img_gt, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2)
        return TF.normalize(img2tensor(img_gt, bgr2rgb=True, float32=True), self.mean, self.std)

    def __getitem__(self, index):
        img_gt, path, rng = self.load(index)
        flipped = self.flipped
        lq, grayed = self.make_lq(img_gt, self.degradation, rng)
        item = {'lq': lq, 'gt': self.gt_tensor(img_gt, grayed), 'gt_path': path, 'lq_path': path}
        if self.opt.get('crop_components'):
            item.update(self.component_boxes(index, path, flipped))
        return item


@DATASET_REGISTRY.register()
class FFHQBlindJointDataset(FFHQBlindDataset):
    """Stage-3 variant: a small and a large degradation of the same GT.

    Small ranges under the usual keys (defaults: CodeFormer stage 3 "small": blur_sigma [0.1, 10],
    downsample_range [1, 12], noise_range [0, 15], jpeg_range [60, 100]); large ones under ``*_large`` keys
    (defaults: stage 2 ranges). Items add ``lq_large``.
    """

    default_ranges = {'blur_sigma': [0.1, 10], 'downsample_range': [1, 12], 'noise_range': [0, 15],
                      'jpeg_range': [60, 100]}
    default_large_ranges = FFHQBlindDataset.default_ranges

    def __init__(self, opt):
        super().__init__(opt)
        self.degradation_large = self.build_degradation(opt, self.default_large_ranges, '_large')

    def __getitem__(self, index):
        img_gt, path, rng = self.load(index)
        lq, grayed = self.make_lq(img_gt, self.degradation, rng)
        lq_large, _ = self.make_lq(img_gt, self.degradation_large, rng)
        return {'lq': lq, 'lq_large': lq_large, 'gt': self.gt_tensor(img_gt, grayed), 'gt_path': path, 'lq_path': path}
