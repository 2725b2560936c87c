"""Whole-image face restoration pieces: face detectors, alignment onto the FFHQ template, paste-back.

Two detectors, behind one small interface (:class:`FaceDetector`: ``detect(img)`` -> list of :class:`Face`):

- :class:`DlibFaceDetector`, the offline default: dlib's HOG detector (or its CNN detector, ``model='cnn'``) and
  its 5-point shape predictor, from the registry packages ``dlib-bin`` and ``face-recognition-models``
  (``pip install "basicsr_sinca[face]"``); nothing is downloaded.
- :class:`RetinaFaceDetector`: facexlib's RetinaFace (ResNet-50), as upstream CodeFormer uses by default; its
  weight file is read from a local folder, or downloaded there when the machine is online.

**Landmarks and templates.** RetinaFace gives the usual five points (eye centres, nose tip, mouth corners); they
are aligned onto the FFHQ 512 template (:data:`FFHQ_TEMPLATE_512`). dlib's 5-point model gives other points: the
two corners of each eye and the base of the nose (no mouth). Those are aligned onto the template of the same five
points on FFHQ faces (:data:`DLIB5_TEMPLATE_512`: the 1024 px template that DFDNet and upstream CodeFormer's dlib
path use, halved). The two templates agree where they overlap: the midpoints of the dlib eye corners lie within
6 px of the FFHQ eye centres (the corners' midpoint sits a little below the pupil), and dlib's nose point lies on
the FFHQ face's vertical axis below the nose tip (tested).

**Alignment** is a similarity transform (rotation, uniform scale, translation: ``cv2.estimateAffinePartial2D``)
from the detected points to the template scaled to the network's face size (``size / 512``), so a face network
built for a smaller size (e.g. a 64 px test network) gets its crop in one warp. Outside the image the crop is
filled with CodeFormer's grey (135, 133, 132).

**Paste-back** warps the restored face back with the inverse transform (``cv2.invertAffineTransform``; scaled when
the background is upsampled) and blends it through a feathered mask: the face square's footprint, eroded and then
blurred by a width proportional to the face size, so the mask is exactly 0 outside the footprint and pixels there
keep their value. When facexlib's ParseNet weights are present, the mask is also multiplied by a soft mask of the
facial classes (skin, brows, eyes, glasses, ears, nose, mouth, lips), which keeps the input's hair and background.
"""
import importlib.util
import os
from dataclasses import dataclass
from os import path as osp

import cv2
import numpy as np

__all__ = [
    'FFHQ_TEMPLATE_512', 'DLIB5_TEMPLATE_512', 'TEMPLATES', 'BORDER_VALUE', 'Face', 'FaceHelperError', 'FaceDetector',
    'DlibFaceDetector', 'RetinaFaceDetector', 'FaceParser', 'build_detector', 'face_recognition_model_file',
    'alignment_matrix', 'warp_face', 'paste_face', 'center_face', 'RETINAFACE_FILE', 'RETINAFACE_URL', 'PARSENET_FILE'
]

# Five points of an aligned 512 px FFHQ face: eye centres (image left, image right), nose tip, mouth corners.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])
# dlib's five points on the same faces, in dlib's order: image-right eye (outer, inner corner), image-left eye
# (outer, inner corner), nose base (DFDNet's / upstream CodeFormer's 1024 px template, halved).
DLIB5_TEMPLATE_512 = np.array([[686.77227723, 488.62376238], [586.77227723, 493.59405941],
                               [337.91089109, 488.38613861], [437.95049505, 493.51485149],
                               [513.58415842, 678.5049505]]) / 2
TEMPLATES = {'ffhq5': FFHQ_TEMPLATE_512, 'dlib5': DLIB5_TEMPLATE_512}
# which points make each eye (image left, image right), per landmark convention
_EYES = {'ffhq5': ([0], [1]), 'dlib5': ([2, 3], [0, 1])}
TEMPLATE_SIZE = 512
BORDER_VALUE = (135, 133, 132)  # CodeFormer's fill outside the image (BGR)

RETINAFACE_FILE = 'detection_Resnet50_Final.pth'
RETINAFACE_URL = 'https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth'
PARSENET_FILE = 'parsing_parsenet.pth'
# CelebAMask-HQ classes of ParseNet's 19 outputs that belong to the face: skin, brows, eyes, glasses, ears,
# earring, nose, mouth, lips (not neck, cloth, hair, hat, background)
FACE_CLASSES = tuple(range(1, 14))


class FaceHelperError(RuntimeError):
    """A detector or parser cannot be set up (package or weight file missing); the message says what to do."""


@dataclass
class Face:
    """One detected face.

    Attributes:
        box (np.ndarray): ``(x0, y0, x1, y1)`` in input pixels.
        score (float): The detector's confidence (dlib HOG: SVM margin; CNN / RetinaFace: a probability).
        landmarks (np.ndarray): ``(5, 2)`` points in input pixels, in the convention ``kind``.
        kind (str): ``'ffhq5'`` (eye centres, nose tip, mouth corners) or ``'dlib5'`` (eye corners, nose base).
    """
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    kind: str

    @property
    def eye_distance(self):
        """Distance between the two eye centres, in input pixels."""
        left, right = (self.landmarks[idx].mean(axis=0) for idx in _EYES[self.kind])
        return float(np.linalg.norm(right - left))

    def scaled(self, factor):
        """The same face in an image resized by ``factor`` (pixel centres kept)."""
        def scale(p):
            return (np.asarray(p, np.float64) + 0.5) * factor - 0.5
        return Face(scale(self.box), self.score, scale(self.landmarks), self.kind)


class FaceDetector:
    """Interface of the face detectors: ``detect(img)`` takes an HWC BGR uint8 image and returns the faces
    (:class:`Face`), best score first. ``name`` says which detector it is."""

    name = 'detector'

    def detect(self, img):
        raise NotImplementedError


def face_recognition_model_file(name):
    """Path of a model file shipped by the ``face-recognition-models`` package (``models/<name>``).

    Found with ``importlib`` without importing the package (its module imports ``pkg_resources``).

    Raises:
        FaceHelperError: the package or the file is missing.
    """
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise FaceHelperError('the dlib detector needs the package face-recognition-models: '
                              'pip install "basicsr_sinca[face]"')
    for folder in spec.submodule_search_locations:
        path = osp.join(folder, 'models', name)
        if osp.isfile(path):
            return path
    raise FaceHelperError(f'face-recognition-models has no models/{name} (reinstall it)')


class DlibFaceDetector(FaceDetector):
    """dlib's face detector and 5-point landmarks, fully offline.

    Args:
        model (str): ``'hog'`` (dlib's frontal HOG + linear SVM detector, fast on CPU) or ``'cnn'`` (dlib's MMOD CNN
            detector from face-recognition-models; more poses, about 100x slower on CPU).
        upsample (int): Times the image is upsampled before detection (each doubles it; finds faces down to about
            80 / 2^upsample px). Default: 1.
        threshold (float): Minimum score: HOG's SVM margin (dlib's default 0) or the CNN's confidence. Default: 0.

    Raises:
        FaceHelperError: dlib (``dlib-bin``) or face-recognition-models is not installed.
    """

    def __init__(self, model='hog', upsample=1, threshold=0.0):
        try:
            import dlib
        except ImportError:
            raise FaceHelperError('the dlib detector needs dlib: pip install "basicsr_sinca[face]" (dlib-bin and '
                                  'face-recognition-models)') from None
        if model not in ('hog', 'cnn'):
            raise ValueError(f"DlibFaceDetector: model must be 'hog' or 'cnn', got {model!r}")
        self.model, self.upsample, self.threshold = model, int(upsample), float(threshold)
        self.name = 'dlib' if model == 'hog' else 'dlib_cnn'
        self._rect = dlib.rectangle
        if model == 'hog':
            self._detector = dlib.get_frontal_face_detector()
        else:
            weights = face_recognition_model_file('mmod_human_face_detector.dat')
            self._detector = dlib.cnn_face_detection_model_v1(weights)
        self._predictor = dlib.shape_predictor(face_recognition_model_file('shape_predictor_5_face_landmarks.dat'))

    def _boxes(self, rgb):
        if self.model == 'hog':
            rects, scores, _ = self._detector.run(rgb, self.upsample, self.threshold)
            return list(zip(rects, scores))
        return [(d.rect, d.confidence) for d in self._detector(rgb, self.upsample) if d.confidence >= self.threshold]

    def detect(self, img):
        rgb = np.ascontiguousarray(img[..., ::-1])
        faces = []
        for rect, score in self._boxes(rgb):
            shape = self._predictor(rgb, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float64)
            faces.append(Face(box, float(score), points, 'dlib5'))
        return sorted(faces, key=lambda f: -f.score)


def _load_facexlib_net(net, path, what):
    """Load a facexlib network's weight file through the package's checkpoint loader (``weights_only``)."""
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    state_dict, _ = read_state_dict(path, None)
    load_state_dict_report(net, state_dict, strict=True, source=f'{path} ({what})')
    return net.eval()


class RetinaFaceDetector(FaceDetector):
    """facexlib's RetinaFace (ResNet-50) with its five landmarks (the FFHQ template's points).

    Args:
        model_dir (str): Folder of ``detection_Resnet50_Final.pth``.
        device (str | torch.device): Where the detector runs.
        download (bool): Download the file into ``model_dir`` when it is missing (as upstream does). Default: True.
        threshold (float): Minimum confidence. Default: 0.8 (facexlib's).

    Raises:
        FaceHelperError: facexlib is missing, or the weight file is missing and cannot be downloaded (offline); the
            message names the file, the folder and the URL.
    """

    name = 'retinaface'

    def __init__(self, model_dir, device='cpu', download=True, threshold=0.8):
        try:
            from facexlib.detection.retinaface import RetinaFace
        except ImportError:
            raise FaceHelperError('the retinaface detector needs facexlib: pip install "basicsr_sinca[face]"') from None
        path = osp.join(model_dir, RETINAFACE_FILE)
        if not osp.isfile(path):
            where = (f'put {RETINAFACE_FILE} (from {RETINAFACE_URL}) into {model_dir}, or use --detector dlib '
                     '(offline; pip install "basicsr_sinca[face]")')
            if not download:
                raise FaceHelperError(f'{path}: RetinaFace weights not found; {where}')
            from facexlib.utils import load_file_from_url
            try:
                load_file_from_url(RETINAFACE_URL, save_dir=model_dir, progress=False)
            except Exception as err:  # noqa: BLE001 - URLError, timeouts, HTTP errors: all mean "no file"
                partial = osp.join(model_dir, RETINAFACE_FILE)
                if osp.isfile(partial):
                    os.remove(partial)
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise FaceHelperError(f'{path}: RetinaFace weights not found and the download failed ({reason}; '
                                      f'offline?); {where}') from None
        import torch
        self.device = torch.device(device)
        self.threshold = float(threshold)
        self._net = _load_facexlib_net(RetinaFace(network_name='resnet50', half=False, device=self.device), path,
                                       'RetinaFace').to(self.device)

    def detect(self, img):
        import torch
        with torch.no_grad():
            dets = self._net.detect_faces(img, conf_threshold=self.threshold)
        faces = [Face(d[:4].astype(np.float64), float(d[4]), d[5:15].reshape(5, 2).astype(np.float64), 'ffhq5')
                 for d in dets]
        return sorted(faces, key=lambda f: -f.score)


def build_detector(name, model_dir, device='cpu', download=True, threshold=None, upsample=1):
    """The detector called ``name``: ``'dlib'`` (HOG), ``'dlib_cnn'``, ``'retinaface'``, or ``'auto'`` (dlib when it
    is installed, else RetinaFace).

    Raises:
        FaceHelperError: the detector cannot be set up (the message says what to install or where to put which file).
    """
    if name == 'auto':
        name = 'dlib' if importlib.util.find_spec('dlib') is not None else 'retinaface'
    if name in ('dlib', 'dlib_cnn'):
        return DlibFaceDetector('hog' if name == 'dlib' else 'cnn', upsample, 0.0 if threshold is None else threshold)
    if name == 'retinaface':
        return RetinaFaceDetector(model_dir, device, download, 0.8 if threshold is None else threshold)
    raise ValueError(f"unknown face detector {name!r} (auto, dlib, dlib_cnn, retinaface)")


class FaceParser:
    """facexlib's ParseNet on aligned 512 px faces: a soft mask of the facial classes, for a paste-back that keeps
    the input's hair and background. Used only when its weight file exists locally (never downloaded).

    Args:
        path (str): ``parsing_parsenet.pth``.
        device (str | torch.device): Where it runs.
    """

    def __init__(self, path, device='cpu'):
        import torch
        from facexlib.parsing.parsenet import ParseNet
        self.device = torch.device(device)
        self._net = _load_facexlib_net(ParseNet(in_size=512, out_size=512, parsing_ch=19), path,
                                       'ParseNet').to(self.device)

    def mask(self, face):
        """HWC BGR uint8 aligned face (any size) -> HxW float32 mask in [0, 1] (1 on the face, smooth edge)."""
        import torch

        from basicsr_sinca.utils.inference import img2input
        size = face.shape[:2]
        x = img2input(cv2.resize(face, (TEMPLATE_SIZE, TEMPLATE_SIZE), interpolation=cv2.INTER_LINEAR), self.device)
        with torch.no_grad():
            labels = self._net(x)[0].argmax(dim=1)[0].cpu().numpy()
        mask = np.isin(labels, FACE_CLASSES).astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=TEMPLATE_SIZE / 64)
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def alignment_matrix(face, size=TEMPLATE_SIZE):
    """The 2x3 similarity transform from input pixels to the ``size`` px aligned face (the template of
    ``face.kind`` scaled by ``size / 512``).

    Raises:
        ValueError: the landmarks are degenerate (no transform found).
    """
    template = TEMPLATES[face.kind] * (size / TEMPLATE_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), template.astype(np.float32),
                                            method=cv2.LMEDS)
    if matrix is None:
        raise ValueError(f'no similarity transform fits the landmarks {face.landmarks.tolist()}')
    return matrix


def warp_face(img, matrix, size):
    """The aligned ``size`` x ``size`` crop of ``img`` (HWC BGR uint8) under ``matrix``; CodeFormer's grey outside."""
    return cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_VALUE)


def _inverse(matrix, scale):
    """Face -> output pixels: the inverse of ``matrix``, for an output ``scale`` times the input (pixel centres)."""
    inverse = cv2.invertAffineTransform(matrix)
    if scale != 1:
        inverse = inverse * scale
        inverse[:, 2] += 0.5 * (scale - 1)
    return inverse


def paste_face(image, face, matrix, scale=1, face_mask=None):
    """Paste a restored aligned face into ``image`` through a feathered mask.

    Args:
        image (np.ndarray): HWC BGR uint8 background, ``scale`` times the input the face was aligned from.
        face (np.ndarray): HWC BGR uint8 restored face (square, the aligned size).
        matrix (np.ndarray): The 2x3 alignment transform (input pixels -> face pixels).
        scale (float): Size of ``image`` relative to that input. Default: 1.
        face_mask (np.ndarray, optional): HxW float mask in [0, 1] on the aligned face (ParseNet), multiplied in.

    Returns:
        tuple: ``(pasted image (uint8), (x0, y0, x1, y1) bounding box of the pixels that may have changed)``. Pixels
        outside the warped face square are returned unchanged.
    """
    size = face.shape[0]
    inverse = _inverse(matrix, scale)
    h, w = image.shape[:2]
    warped = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    footprint = cv2.warpAffine(np.ones((size, size), np.float32), inverse, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    side = size * float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # the face square's side in output pixels
    feather = max(1, int(round(side / 24)))
    erode = max(1, int(round(side / 64))) + feather
    # the image border does not erode (a face cut by the border is pasted up to it); the blur cannot spread the
    # mask beyond the eroded footprint
    mask = cv2.erode(footprint, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * feather + 1, 2 * feather + 1), 0, borderType=cv2.BORDER_REPLICATE)
    if face_mask is not None:
        mask = mask * cv2.warpAffine(face_mask.astype(np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = mask[..., None]
    blended = mask * warped.astype(np.float32) + (1 - mask) * image.astype(np.float32)
    ys, xs = np.nonzero(footprint)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
    return np.clip(blended.round(), 0, 255).astype(np.uint8), box


def center_face(faces, shape):
    """The face whose box centre is nearest the centre of an image of ``shape`` (None when there is none)."""
    if not faces:
        return None
    centre = np.array([shape[1], shape[0]], np.float64) / 2
    return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
