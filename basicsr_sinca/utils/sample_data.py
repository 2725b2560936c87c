"""Small real-photo datasets built offline from the images bundled with scikit-image.

Used by the tests and the quickstart: the photographs are real (faces, animals, objects, textures), so
restoration metrics behave like on real data, but nothing has to be downloaded.
"""
import os
from os import path as osp

import cv2
import numpy as np

__all__ = ['COLOR_PHOTOS', 'load_photo', 'random_crops', 'write_sr_pairs', 'face_images', 'write_face_images']

# colour photographs bundled with scikit-image (>= 0.19) that load without pooch
COLOR_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina',
                'colorwheel')


def load_photo(name):
    """A bundled scikit-image photo as an HWC **BGR** uint8 array (OpenCV/BasicSR convention)."""
    import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., 2::-1])


def random_crops(img, size, num, rng):
    """``num`` random ``size``x``size`` crops of ``img`` (downscaled first if it is over 2x the crop size)."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise ValueError(f'image of {h}x{w} is smaller than the crop size {size}')
    crops = []
    for _ in range(num):
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        crops.append(img[top:top + size, left:left + size].copy())
    return crops


def write_sr_pairs(root, names=COLOR_PHOTOS[:3], num_per_image=2, gt_size=64, scale=2, seed=0):
    """Write paired GT/LQ PNGs (LQ = bicubic x1/scale) to ``root/gt`` and ``root/lq``.

    Returns:
        list[str]: The file names written (same names in both folders).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'gt'), exist_ok=True)
    os.makedirs(osp.join(root, 'lq'), exist_ok=True)
    written = []
    for name in names:
        for i, gt in enumerate(random_crops(load_photo(name), gt_size, num_per_image, rng)):
            lq = cv2.resize(gt, (gt_size // scale, gt_size // scale), interpolation=cv2.INTER_CUBIC)
            fname = f'{name}_{i:02d}.png'
            cv2.imwrite(osp.join(root, 'gt', fname), gt)
            cv2.imwrite(osp.join(root, 'lq', fname), lq)
            written.append(fname)
    return written


def face_images(size=64, num=8, seed=0):
    """``num`` real face images (BGR uint8, ``size`` x ``size``): jittered crops of scikit-image's astronaut
    portrait, then gray LFW faces from ``skimage.data.lfw_subset`` (upscaled)."""
    import skimage.data
    rng = np.random.default_rng(seed)
    astronaut = load_photo('astronaut')
    faces = []
    n_astro = min(num, max(1, num // 2))
    for _ in range(n_astro):  # the face spans roughly rows 30-230, columns 150-330
        side = int(rng.integers(190, 240))
        top, left = int(rng.integers(10, 40)), int(rng.integers(130, 170))
        crop = astronaut[top:top + side, left:left + side]
        faces.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    lfw = skimage.data.lfw_subset()
    for i in range(num - n_astro):
        gray = (np.clip(lfw[i], 0, 1) * 255).astype(np.uint8)
        faces.append(cv2.resize(np.repeat(gray[..., None], 3, axis=2), (size, size), interpolation=cv2.INTER_CUBIC))
    return faces


def write_face_images(root, size=64, num=8, seed=0):
    """Write :func:`face_images` as PNGs into ``root``; returns the paths."""
    os.makedirs(root, exist_ok=True)
    paths = []
    for i, img in enumerate(face_images(size, num, seed)):
        paths.append(osp.join(root, f'face_{i:03d}.png'))
        cv2.imwrite(paths[-1], img)
    return paths
