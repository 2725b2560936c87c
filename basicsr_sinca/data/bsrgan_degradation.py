"""BSRGAN's degradation model (Zhang et al. 2021) as FeMaSR trains with it.

Images are HWC float32 in [0, 1], **BGR** (OpenCV/BasicSR order; only JPEG cares about the order, and it is
encoded correctly this way). All randomness comes from a ``numpy.random.Generator``, so a (seed, index) pair
reproduces a sample exactly. The blur kernels are BasicSR's ``bivariate_Gaussian``; the MATLAB-style bicubic
resize is BasicSR's ``imresize``.

Steps for scale ``sf``: modcrop; for sf = 4, with p = 0.25 first halve the image (cv2 linear/cubic/area or
MATLAB bicubic) and continue with sf = 2; then, in random order with the final resize after the first
downsampling: two blurs (anisotropic Gaussian, eigenvalues U(0, 4 + sf), or isotropic, sigma U(0, 2 + 0.2·sf);
kernel size 2·randint(2, 11) + 3), a random downsampling (75%: cv2 by 1 / U(1, 2·sf); 25%: a shifted 25x25
Gaussian blur then nearest subsampling), the final resize to 1/sf of the size before that downsampling, Gaussian
noise (sigma randint(2, 25) / 255; 40% colour, 40% gray, 20% channel-correlated) and JPEG (p = 0.9, quality
randint(30, 95)); finally always one more JPEG with quality in [30, 95]. (BSRGAN's camera-ISP step needs a
model that FeMaSR does not ship either and is skipped.)
"""
import cv2
import numpy as np
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.utils.matlab_functions import imresize
from scipy import ndimage

from basicsr_sinca.data.data_util import jpeg_compress

__all__ = ['degradation_bsrgan', 'random_blur', 'random_noise']

INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA)


def _convolve(img, kernel):
    """True convolution with mirror borders (cv2.filter2D correlates, so the kernel is flipped)."""
    return cv2.filter2D(img, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_REFLECT_101)


def _resize(img, width, height, interpolation):
    return cv2.resize(img, (max(1, int(width)), max(1, int(height))), interpolation=interpolation)


def random_blur(img, sf, rng, blur_scale=1.0):
    """One BSRGAN blur: anisotropic (covariance eigenvalues U(0, 4 + sf), angle U(0, pi)) or isotropic Gaussian
    (sigma U(0, 2 + 0.2·sf)); ``blur_scale`` multiplies the kernel widths (sigmas)."""
    ksize = 2 * int(rng.integers(2, 12)) + 3
    if rng.random() < 0.5:
        l1, l2 = (4.0 + sf) * rng.random(), (4.0 + sf) * rng.random()
        kernel = bivariate_Gaussian(ksize, max(blur_scale * np.sqrt(l1), 1e-3), max(blur_scale * np.sqrt(l2), 1e-3),
                                    rng.random() * np.pi, isotropic=False)
    else:
        kernel = bivariate_Gaussian(ksize, max(blur_scale * (2.0 + 0.2 * sf) * rng.random(), 1e-3), 0, 0,
                                    isotropic=True)
    return _convolve(img, kernel)


def random_noise(img, rng, low=2, high=25):
    """Gaussian noise of sigma randint(low, high)/255: 40% per-channel, 40% gray, 20% channel-correlated."""
    sigma = int(rng.integers(low, high + 1)) / 255.0
    r = rng.random()
    if r > 0.6:
        noise = rng.normal(0, sigma, img.shape)
    elif r < 0.4:
        noise = rng.normal(0, sigma, (*img.shape[:2], 1))
    else:
        u, _ = np.linalg.qr(rng.random((3, 3)))  # random orthonormal basis
        cov = np.abs(sigma**2 * u.T @ np.diag(rng.random(3)) @ u)
        noise = rng.multivariate_normal(np.zeros(3), cov, img.shape[:2])
    return np.clip(img + noise.astype(np.float32), 0.0, 1.0)


def _random_jpeg(img, rng, quality_range=(30, 95)):
    return jpeg_compress(img, int(rng.integers(quality_range[0], quality_range[1] + 1)))


def _shifted_gaussian_downsample(img, sf, rng):
    """25x25 Gaussian (sigma U(0.1, 0.6·sf)) shifted by (sf - 1)/2 px, then nearest subsampling by sf."""
    kernel = bivariate_Gaussian(25, rng.uniform(0.1, 0.6 * sf), 0, 0, isotropic=True)
    shift = (sf - 1) * 0.5
    kernel = ndimage.shift(kernel, (-shift, -shift), order=1, mode='nearest')
    kernel = kernel / kernel.sum()
    return _convolve(img, kernel)[0::sf, 0::sf]


def degradation_bsrgan(img, sf=4, rng=None, blur_scale=1.0, down_range=None, noise_range=(2, 25),
                       jpeg_range=(30, 95)):
    """Degrade an HR image with BSRGAN's random pipeline.

    The defaults are BSRGAN's; the keyword ranges give milder (or harsher) settings of the same pipeline.

    Args:
        img (ndarray): HWC float32 BGR in [0, 1]; at least 2·sf pixels per side.
        sf (int): Scale factor (2 or 4; others work too).
        rng (numpy.random.Generator | None): Randomness (default: a fresh unseeded generator).
        blur_scale (float): Multiplies the widths of the two random blur kernels. Default: 1.
        down_range (tuple[float] | None): Factor range of the random cv2 downsampling (default: (1, 2·sf)).
        noise_range (tuple[int]): Noise sigma range on the 0-255 scale (integers, inclusive). Default: (2, 25).
        jpeg_range (tuple[int]): JPEG quality range (inclusive) of both JPEG steps. Default: (30, 95).

    Returns:
        tuple[ndarray, ndarray]: ``(lq, hq)`` — ``hq`` is ``img`` mod-cropped to a multiple of sf, ``lq`` is
        1/sf of its size.
    """
    rng = np.random.default_rng() if rng is None else rng
    h, w = img.shape[:2]
    if h < 2 * sf or w < 2 * sf:
        raise ValueError(f'degradation_bsrgan: image of {h}x{w} is too small for scale {sf}')
    hq = np.ascontiguousarray(img[:h - h % sf, :w - w % sf]).astype(np.float32)
    lq = hq.copy()
    h, w = hq.shape[:2]
    if sf == 4 and rng.random() < 0.25:  # start with a x2 reduction, then degrade by x2
        if rng.random() < 0.5:
            lq = _resize(lq, w / 2, h / 2, INTERPOLATIONS[rng.integers(3)])
        else:
            lq = imresize(lq, 1 / 2, antialiasing=True)
        lq = np.clip(lq, 0.0, 1.0).astype(np.float32)
        sf = 2

    order = list(rng.permutation(7))
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:  # the final resize must follow the random downsampling
        order[i2], order[i3] = order[i3], order[i2]
    size_before_down = lq.shape[1], lq.shape[0]
    for op in order:
        if op in (0, 1):
            lq = random_blur(lq, sf, rng, blur_scale)
        elif op == 2:
            size_before_down = lq.shape[1], lq.shape[0]
            if rng.random() < 0.75:
                factor = rng.uniform(*(down_range or (1, 2 * sf)))
                lq = _resize(lq, lq.shape[1] / factor, lq.shape[0] / factor, INTERPOLATIONS[rng.integers(3)])
            else:
                lq = _shifted_gaussian_downsample(lq, sf, rng)
            lq = np.clip(lq, 0.0, 1.0)
        elif op == 3:
            lq = np.clip(_resize(lq, size_before_down[0] / sf, size_before_down[1] / sf,
                                 INTERPOLATIONS[rng.integers(3)]), 0.0, 1.0)
        elif op == 4:
            lq = random_noise(lq, rng, *noise_range)
        elif op == 5 and rng.random() < 0.9:
            lq = _random_jpeg(lq, rng, jpeg_range)
    lq = _random_jpeg(lq, rng, jpeg_range)
    return lq.astype(np.float32), hq
