"""Face helper: templates, similarity alignment, feathered paste-back, the dlib detector on a real photo, RetinaFace's
offline message. dlib (dlib-bin + face-recognition-models, the `face` extra) is required: without it these tests
fail, they are never skipped."""
import math
import sys

import cv2
import numpy as np
import pytest

from basicsr_sinca.utils import face_helper as fh
from basicsr_sinca.utils.sample_data import load_photo


def test_dlib_template_agrees_with_the_ffhq_template():
    """Both describe the same aligned 512 px FFHQ faces: the dlib eye-corner midpoints lie within 6 px of the FFHQ eye
    centres (a little lower: corners sit below the pupil); dlib's nose base is on the face's vertical axis, below the
    nose tip and above the mouth."""
    dlib5, ffhq5 = fh.DLIB5_TEMPLATE_512, fh.FFHQ_TEMPLATE_512
    left, right = dlib5[[2, 3]].mean(axis=0), dlib5[[0, 1]].mean(axis=0)
    assert np.linalg.norm(left - ffhq5[0]) < 6 and np.linalg.norm(right - ffhq5[1]) < 6
    assert left[1] > ffhq5[0, 1] and right[1] > ffhq5[1, 1]
    axis_x = ffhq5[[0, 1]].mean(axis=0)[0]
    assert abs(dlib5[4, 0] - axis_x) < 2
    assert ffhq5[2, 1] < dlib5[4, 1] < ffhq5[[3, 4], 1].mean()


def _similarity(angle_deg, scale, shift):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), shift[0]],
                     [scale * math.sin(a), scale * math.cos(a), shift[1]]])


@pytest.mark.parametrize('kind', ['ffhq5', 'dlib5'])
@pytest.mark.parametrize('size', [512, 64])
def test_alignment_recovers_a_known_similarity(kind, size):
    """Landmarks made by a known similarity of the template are mapped exactly back onto the template scaled to
    ``size``; the eye distance is measured in input pixels."""
    forward = _similarity(17, 0.3, (140, 60))  # template -> input pixels
    template = fh.TEMPLATES[kind]
    points = template @ forward[:, :2].T + forward[:, 2]
    face = fh.Face(np.array([0., 0., 1., 1.]), 1.0, points, kind)
    matrix = fh.alignment_matrix(face, size)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, template * size / 512, atol=1e-3)
    eyes = {'ffhq5': (template[0], template[1]), 'dlib5': (template[[2, 3]].mean(0), template[[0, 1]].mean(0))}[kind]
    assert face.eye_distance == pytest.approx(0.3 * np.linalg.norm(eyes[1] - eyes[0]), rel=1e-6)


def test_warp_crops_with_codeformers_grey_outside_the_image():
    img = load_photo('astronaut')
    matrix = np.array([[1., 0., 100.], [0., 1., 100.]])  # the image shifted by 100 px: its top-left is outside
    crop = fh.warp_face(img, matrix, 256)
    assert tuple(crop[0, 0]) == fh.BORDER_VALUE and np.array_equal(crop[100:, 100:], img[:156, :156])


@pytest.mark.parametrize('scale', [1, 2])
def test_paste_back_of_the_aligned_crop_restores_the_photo_and_leaves_the_rest(scale):
    """Pasting the unrestored aligned crop back reproduces the photo where the mask is full (up to the two
    interpolations), changes nothing outside the face square's footprint, and scales with the background."""
    img = load_photo('astronaut')
    forward = _similarity(-12, 0.35, (150, 40))
    points = fh.FFHQ_TEMPLATE_512 @ forward[:, :2].T + forward[:, 2]
    matrix = fh.alignment_matrix(fh.Face(np.zeros(4), 1.0, points, 'ffhq5'), 256)
    crop = fh.warp_face(img, matrix, 256)
    background = img if scale == 1 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    pasted, box = fh.paste_face(background, crop, matrix, scale)
    assert pasted.shape == background.shape and pasted.dtype == np.uint8
    x0, y0, x1, y1 = box
    outside = np.ones(background.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(pasted[outside], background[outside])  # exactly, not within rounding
    # the middle of the face (inside the full mask) is reproduced
    centre = points[:3].mean(axis=0)
    cx, cy = ((centre + 0.5) * scale - 0.5).round().astype(int)
    r = 12 * scale
    diff = np.abs(pasted[cy - r:cy + r, cx - r:cx + r].astype(int) - background[cy - r:cy + r, cx - r:cx + r])
    assert diff.mean() < 6
    # the box bounds the footprint of the 256 px crop: a square of side 256 / (crop scale) input pixels, rotated 12°
    side = 256 / np.sqrt(abs(np.linalg.det(matrix[:, :2]))) * scale
    assert abs((x1 - x0) - side * (abs(math.cos(math.radians(12))) + abs(math.sin(math.radians(12))))) < 3 * scale


def test_paste_mask_from_parsing_limits_the_change():
    img = load_photo('astronaut')
    matrix = np.array([[2., 0., -300.], [0., 2., -100.]])
    crop = np.zeros((128, 128, 3), np.uint8)
    half = np.zeros((128, 128), np.float32)
    half[:, :64] = 1  # only the left half of the face counts
    pasted, _ = fh.paste_face(img, crop, matrix, 1, face_mask=half)
    changed = np.abs(pasted.astype(int) - img.astype(int)).sum(axis=2) > 0
    assert changed[50:114, 150:180].mean() > 0.9 and changed[50:114, 185:214].mean() == 0


def test_center_face_and_scaled_face():
    a = fh.Face(np.array([0., 0., 10., 10.]), 0.9, np.zeros((5, 2)), 'ffhq5')
    b = fh.Face(np.array([45., 45., 55., 55.]), 0.5, np.ones((5, 2)), 'ffhq5')
    assert fh.center_face([a, b], (100, 100, 3)) is b and fh.center_face([], (10, 10)) is None
    twice = b.scaled(2)
    np.testing.assert_allclose(twice.box, [90.5, 90.5, 110.5, 110.5])
    np.testing.assert_allclose(twice.landmarks, 2.5)


def test_model_files_found_without_importing_face_recognition_models():
    sys.modules.pop('face_recognition_models', None)
    for name in ('shape_predictor_5_face_landmarks.dat', 'mmod_human_face_detector.dat'):
        assert fh.face_recognition_model_file(name).endswith(f'models/{name}')
    assert 'face_recognition_models' not in sys.modules  # its module imports pkg_resources
    with pytest.raises(fh.FaceHelperError, match='no models/nothing.dat'):
        fh.face_recognition_model_file('nothing.dat')


def test_dlib_hog_detector_on_the_astronaut():
    """The real face of scikit-image's astronaut is found with dlib's five points in dlib's order (image-right eye
    corners, image-left eye corners, nose base), the same points dlib gives when called directly."""
    import dlib
    img = load_photo('astronaut')
    faces = fh.DlibFaceDetector('hog', upsample=1).detect(img)
    assert faces and [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 160 < x0 < 200 and 60 < y0 < 100 and 240 < x1 < 290 and 150 < y1 < 190  # around her face
    pts = face.landmarks
    assert pts[[0, 1], 0].min() > pts[[2, 3], 0].max()  # 0, 1: the eye on the image's right
    assert pts[0, 0] > pts[1, 0] and pts[2, 0] < pts[3, 0]  # outer corners outside the inner ones
    assert pts[4, 1] > pts[:4, 1].max() and pts[3, 0] < pts[4, 0] < pts[1, 0]  # nose base below, between the eyes
    assert 30 < face.eye_distance < 60
    # the same as dlib called directly on the RGB image
    rgb = np.ascontiguousarray(img[..., ::-1])
    rects, scores, _ = dlib.get_frontal_face_detector().run(rgb, 1, 0.0)
    predictor = dlib.shape_predictor(fh.face_recognition_model_file('shape_predictor_5_face_landmarks.dat'))
    assert len(rects) == len(faces)
    best = int(np.argmax(scores))
    direct = [[p.x, p.y] for p in predictor(rgb, rects[best]).parts()]
    np.testing.assert_array_equal(face.landmarks, direct)
    # aligned onto the template, the crop holds her face: the eyes land on the template's eye positions
    matrix = fh.alignment_matrix(face, 512)
    mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - fh.DLIB5_TEMPLATE_512).max() < 12


def test_dlib_finds_nothing_on_coffee_and_auto_picks_dlib(tmp_path):
    det = fh.build_detector('auto', str(tmp_path))
    assert det.name == 'dlib'
    assert det.detect(load_photo('coffee')) == []


def test_retinaface_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import facexlib.utils
    folder = tmp_path / 'fx'

    def offline(url, save_dir=None, **kwargs):
        import os
        os.makedirs(save_dir, exist_ok=True)
        open(os.path.join(save_dir, fh.RETINAFACE_FILE), 'wb').close()  # a partial download
        raise OSError('<urlopen error [Errno -3] Temporary failure in name resolution>')

    monkeypatch.setattr(facexlib.utils, 'load_file_from_url', offline)
    with pytest.raises(fh.FaceHelperError) as err:
        fh.RetinaFaceDetector(str(folder), download=True)
    msg = str(err.value)
    assert '\n' not in msg and str(folder / fh.RETINAFACE_FILE) in msg and fh.RETINAFACE_URL in msg
    assert 'download failed' in msg and 'name resolution' in msg and '--detector dlib' in msg
    assert not (folder / fh.RETINAFACE_FILE).exists()  # no partial file left behind
    with pytest.raises(fh.FaceHelperError, match='RetinaFace weights not found; put detection_Resnet50_Final.pth'):
        fh.RetinaFaceDetector(str(folder), download=False)
