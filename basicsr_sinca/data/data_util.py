"""Small helpers shared by the datasets of this package (reading, per-sample randomness, JPEG)."""
import cv2
import numpy as np
from basicsr.utils import FileClient, imfrombytes

__all__ = ['sample_rng', 'decode_image', 'jpeg_compress', 'make_file_client', 'IMG_EXTENSIONS']

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def sample_rng(seed, index):
    """Generator for one sample: fixed by (seed, index) when ``seed`` is set, else drawn from NumPy's global
    state (which BasicSR seeds per worker from ``manual_seed``)."""
    if seed is not None:
        return np.random.default_rng([int(seed), int(index)])
    return np.random.default_rng(np.random.randint(0, 2**31 - 1))


def make_file_client(io_backend_opt):
    """A BasicSR ``FileClient`` from ``io_backend`` options (created lazily in each data-loader worker)."""
    opt = dict(io_backend_opt)
    return FileClient(opt.pop('type', 'disk'), **opt)


def decode_image(img_bytes, path, where):
    """Bytes from a BasicSR file client -> HWC BGR float32 [0, 1] with 3 channels.

    Raises:
        ValueError: the bytes are not a decodable image (names ``where`` and ``path``).
    """
    img = imfrombytes(img_bytes, float32=False) if img_bytes else None  # uint8 first: None if undecodable
    if img is None:
        raise ValueError(f'{where}: cannot decode image {path}')
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.float32) / 255.0


def jpeg_compress(img, quality):
    """JPEG round trip of an HWC float32 [0, 1] BGR image at ``quality``.

    ``basicsr.data.degradations.add_jpg_compression`` hands OpenCV a float image, which OpenCV 5 converts
    with a warning on every call; encoding the 8-bit image ourselves is the same operation, silently.
    """
    img8 = (np.clip(img, 0, 1) * 255.0).round().astype(np.uint8)
    ok, buf = cv2.imencode('.jpg', img8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError('JPEG encoding failed')
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
