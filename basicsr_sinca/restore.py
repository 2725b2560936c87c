"""Restore images with any network of the package: faces (whole photos or aligned crops) and super-resolution.

One command for every baseline (CodeFormer, DAEFR, RestoreFormer, VQFR: face networks; FeMaSR, AdaCode: SR
networks), each with its own or a SinCA bottleneck. The network is the ``network_g`` of ``--opt`` (an option file,
or the name of a packaged one such as ``codeformer_sinca``; default: the official CodeFormer) with the weights of
``--model_path`` (BasicSR ``.pth`` or a released Lightning ``.ckpt``, read without running any code of the file).
Whether it restores faces or super-resolves follows from the network: face networks have a face size
(``img_size``), SR networks tile (``test_tile``).

**Whole photos** (face networks, default): faces are detected, their five landmarks aligned by a similarity
transform onto the FFHQ template scaled to the network's face size, restored, warped back and pasted through a
feathered mask (times a face-parsing mask when facexlib's ParseNet weights are in ``--face_model_dir``); the
background is upsampled by ``-s`` with an SR network of the package (``--bg_opt`` / ``--bg_model_path``) or by
plain bicubic resizing. Detectors (``--detector``): ``dlib`` (HOG, the default when dlib is installed: ``pip install
"basicsr_sinca[face]"``, fully offline), ``dlib_cnn``, ``retinaface`` (facexlib's; its weights are read from
``--face_model_dir`` or downloaded there, as upstream does; offline without the file it stops with one line saying
where to put which file). Faces whose eye distance is under ``--min_eye_dist`` pixels are skipped and reported. A
photo without a face is written as its upsampled (``-s 1``: unchanged) self and reported as "no face". Gray photos
stay gray. Alpha channels are composited on white.

**Aligned faces** (``--has_aligned``): every image is resized to the face size and restored as a whole.

**Super-resolution** (SR networks): ``-s`` must be the network's factor; images over ``--max_size``² LR pixels are
tiled (``--tile_size`` / ``--tile_pad``), and an image that runs out of memory in one piece is retried in tiles.
Gray images are restored as colour images of gray content; alpha is upscaled and kept; 16-bit stays 16-bit.

Outputs (PNG, written atomically; never over an input, never two with one name) under ``-o``:
  whole photos   ``final_results/<name>.png``; with ``--save_faces`` also ``cropped_faces/<name>_<k>.png`` (the
                 aligned input crop) and ``restored_faces/<name>_<k>.png``; ``faces.json``: every detected face
                 (box, score, landmarks, restored or why not) per input
  aligned faces  ``restored_faces/<name>.png``
  SR             ``<name>.png`` (``--maps``: ``maps/<name>_maps.png``, the network's maps, e.g. AdaCode's weights)
A file that fails is reported by name and the batch goes on; the exit status is 1 when any input failed, 2 when
nothing could start (bad option, missing file).

Examples::

    # whole photos with the released CodeFormer, dlib detection (offline), 2x background by bicubic resizing
    sinca-restore -i photos/ -o results/cf -w 0.7 -s 2 \\
        --model_path experiments/pretrained_models/CodeFormer/codeformer.pth
    # a CodeFormer + SinCA model trained with this package, on aligned crops
    sinca-restore -i 'aligned/*.png' -o results/cf_sinca --has_aligned --opt codeformer_sinca \\
        --model_path experiments/CodeFormer_stage3_sinca/models/net_g_latest.pth
    # whole photos, background upsampled by a FeMaSR x2 network of the package, restored faces saved too
    python -m basicsr_sinca.restore -i photos -o results/cf -s 2 --save_faces --model_path codeformer.pth \\
        --bg_opt test/femasr/test_femasr_official_x2 --bg_model_path FeMaSR_SRX2_model_g.pth
    # super-resolution x4 with the released FeMaSR (tiled above 600x600 LR pixels)
    sinca-restore -i inputs -o results/femasr_x4 -s 4 --opt test/femasr/test_femasr_official_x4 \\
        --model_path experiments/pretrained_models/FeMaSR/FeMaSR_SRX4_model_g.pth
"""
import argparse
import glob
import json
import sys
from os import path as osp

DEFAULT_OPT = 'test/codeformer/test_codeformer_official'
# options of face networks only: (flag, argparse dest); given with an SR network they are an error
FACE_ONLY = (('--has_aligned', 'has_aligned'), ('--save_faces', 'save_faces'),
             ('--only_center_face', 'only_center_face'), ('--bg_opt', 'bg_opt'), ('-w', 'fidelity_weight'),
             ('--fidelity_ratio', 'fidelity_ratio'), ('--adain', 'adain'), ('--detector', 'detector'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='sinca-restore', description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-i', '--input', required=True, help='an image, a folder of images or a glob (quoted)')
    parser.add_argument('-o', '--output', default='results/restored', help='output folder (default: results/restored)')
    parser.add_argument('--opt', default=None,
                        help='option file (or packaged option name, e.g. codeformer_sinca) whose network_g is the '
                        f'network (default: {DEFAULT_OPT}, the official CodeFormer)')
    parser.add_argument('--model_path', required=True, help='checkpoint of the network (.pth, or a Lightning .ckpt)')
    parser.add_argument('--param_key', default=None,
                        help='key inside the checkpoint; a key the file lacks is an error (default: face networks '
                        'params_ema, else params; SR networks params, else params_ema)')
    parser.add_argument('-s', '--scale', '--out_scale', '--upscale', dest='scale', type=int, default=None,
                        help='SR: the network\'s factor (default: the network\'s); whole photos: background '
                        'upsampling factor (default 1: the output has the input\'s size)')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    face = parser.add_argument_group('face networks')
    face.add_argument('-w', '--fidelity_weight', type=float, default=None,
                      help="CodeFormer's fidelity weight w in [0, 1]: small = quality, large = fidelity (default 0.5 "
                      'for networks that take it)')
    face.add_argument('--fidelity_ratio', type=float, default=None,
                      help="VQFR v2's fidelity ratio in [0, 1]: 0 = texture branch only (most detail), 1 = most "
                      "faithful to the input (default: the network's own, 1.0)")
    face.add_argument('--adain', choices=['auto', 'on', 'off'], default='auto',
                      help="CodeFormer's AdaIN of the bottleneck output to the LQ statistics (auto: on for bottlenecks "
                      'that select codes, as CodeFormer; off for feature transformers)')
    face.add_argument('--has_aligned', action='store_true', help='inputs are aligned, cropped faces')
    face.add_argument('--detector', choices=['auto', 'dlib', 'dlib_cnn', 'retinaface'], default='auto',
                      help='face detector for whole photos (auto: dlib when installed, else retinaface)')
    face.add_argument('--det_threshold', type=float, default=None,
                      help='minimum detection score (dlib HOG: SVM margin, default 0; dlib_cnn: default 0; '
                      'retinaface: confidence, default 0.8)')
    face.add_argument('--det_upsample', type=int, default=1,
                      help='dlib: times the image is doubled before detection (finds faces down to ~80/2^n px; '
                      'default 1)')
    face.add_argument('--detect_size', type=int, default=1280,
                      help='photos whose longer side exceeds this are downscaled for detection (default 1280)')
    face.add_argument('--face_model_dir', default='experiments/pretrained_models/facexlib',
                      help='folder of facexlib weights: detection_Resnet50_Final.pth (retinaface), '
                      'parsing_parsenet.pth (parsing mask, used when present)')
    face.add_argument('--no_download', action='store_true', help='retinaface: never download its weights')
    face.add_argument('--no_parse', action='store_true', help='paste with the feathered square mask only')
    face.add_argument('--min_eye_dist', type=float, default=5.0,
                      help='faces whose eye distance is below this many input pixels are skipped (default 5)')
    face.add_argument('--only_center_face', action='store_true', help='restore only the face nearest the centre')
    face.add_argument('--save_faces', action='store_true',
                      help='also write the aligned crops (cropped_faces/) and the restored faces (restored_faces/)')
    face.add_argument('--bg_opt', default=None,
                      help='option file of an SR network of the package that upsamples the background (with '
                      '--bg_model_path; default: bicubic resizing)')
    face.add_argument('--bg_model_path', default=None, help='checkpoint of the --bg_opt network')
    sr = parser.add_argument_group('SR networks (and the background upsampler)')
    sr.add_argument('--max_size', type=int, default=600,
                    help='LR images with more than max_size^2 pixels are tiled (default 600)')
    sr.add_argument('--tile_size', type=int, default=240, help='tile size in LR pixels (default 240)')
    sr.add_argument('--tile_pad', type=int, default=16, help='context around each tile in LR pixels (default 16)')
    sr.add_argument('--maps', action='store_true',
                    help="SR: also write maps/<name>_maps.png, the output beside the network's maps "
                    "(AdaCode's weights)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# inputs, device, networks


def list_input_files(spec):
    """Files to process: a file, every file directly in a folder, or the files matching a glob (sorted).

    Raises:
        FileNotFoundError: nothing exists or matches.
    """
    from basicsr_sinca.utils.inference import list_inputs
    if osp.exists(spec) or not glob.has_magic(spec):
        return list_inputs(spec)
    files = sorted(p for p in glob.glob(spec) if osp.isfile(p) and not osp.basename(p).startswith('.'))
    if not files:
        raise FileNotFoundError(f'input not found: no file matches {spec}')
    return files


def resolve_device(name):
    import torch
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def network_kind(net):
    """``'face'`` (a face size), ``'sr'`` (tiled SR inference) or None."""
    if getattr(net, 'img_size', None):
        return 'face'
    if hasattr(net, 'test_tile') and hasattr(net, 'test'):
        return 'sr'
    return None


def load_network(opt, model_path, param_key, device):
    """Build ``network_g`` of ``opt`` (a file or packaged name) and load ``model_path`` strictly.

    Returns:
        tuple: ``(network in eval mode on device, 'face' | 'sr')``.

    Raises:
        OptionError / ValueError / FileNotFoundError: bad option file, a network that is neither a face nor an SR
            network, a checkpoint that does not match; one line each.
    """
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import OptionError, resolve_option_file
    opt_file = resolve_option_file(opt)
    net = build_net_from_options(opt_file)
    kind = network_kind(net)
    if kind is None:
        raise OptionError(f'{opt}: {type(net).__name__} is neither a face network (img_size) nor an SR network '
                          '(test_tile) of the package')
    preferred = ('params_ema', 'params', 'state_dict') if kind == 'face' else ('params', 'params_ema', 'state_dict')
    keys = (param_key, ()) if param_key is not None else (preferred[0], preferred)
    state_dict, used = read_state_dict(model_path, *keys)
    load_state_dict_report(net, state_dict, strict=True, source=f'{model_path} [{used}]')
    return net.to(device).eval(), kind


def decode_options(net, args):
    """``w`` / ``adain`` / ``fidelity_ratio`` for networks whose ``decode`` takes them; a ``-w`` or
    ``--fidelity_ratio`` the network cannot use (or ``--adain on``) is an error. ``fidelity_ratio`` is passed only
    when given (else the network's default)."""
    import inspect

    from basicsr_sinca.utils.options import OptionError
    takes = inspect.signature(net.decode).parameters
    kwargs = {}
    if 'w' in takes:
        kwargs['w'] = 0.5 if args.fidelity_weight is None else args.fidelity_weight
        if not 0 <= kwargs['w'] <= 1:
            raise OptionError(f"-w/--fidelity_weight must be in [0, 1], got {kwargs['w']}")
    elif args.fidelity_weight is not None:
        raise OptionError(f'-w/--fidelity_weight: {type(net).__name__} has no fidelity weight')
    if 'adain' in takes:
        kwargs['adain'] = {'on': True, 'off': False}.get(args.adain, all(b.selects_codes for b in net.bottlenecks))
    elif args.adain == 'on':
        raise OptionError(f'--adain: {type(net).__name__} has no AdaIN option')
    if args.fidelity_ratio is not None:
        if 'fidelity_ratio' not in takes:
            raise OptionError(f'--fidelity_ratio: {type(net).__name__} has no fidelity ratio')
        if not 0 <= args.fidelity_ratio <= 1:
            raise OptionError(f'--fidelity_ratio must be in [0, 1], got {args.fidelity_ratio}')
        kwargs['fidelity_ratio'] = args.fidelity_ratio
    return kwargs


def check_mode_options(args, kind, net):
    """Options that do not apply to the network's kind are errors (one line), not silently ignored."""
    from basicsr_sinca.utils.options import OptionError
    name = type(net).__name__
    if kind == 'sr':
        defaults = parse_args(['-i', '-', '--model_path', '-'])
        given = [flag for flag, dest in FACE_ONLY if getattr(args, dest) != getattr(defaults, dest)]
        if given:
            raise OptionError(f'{given[0]}: {name} is an SR network; the option is for face networks')
        if args.scale is not None and args.scale != net.scale_factor:
            raise OptionError(f'{args.opt}: network_g.scale_factor is {net.scale_factor} but -s/--out_scale is '
                              f'{args.scale}')
        return
    if args.maps:
        raise OptionError(f'--maps: {name} is a face network; the option is for SR networks')
    if args.has_aligned and args.scale not in (None, 1):
        raise OptionError('-s: aligned faces are restored at the face size; -s applies to whole photos')
    if args.scale is not None and args.scale < 1:
        raise OptionError(f'-s must be >= 1, got {args.scale}')
    if (args.bg_opt is None) != (args.bg_model_path is None):
        raise OptionError('--bg_opt and --bg_model_path go together')
    if args.min_eye_dist < 0 or args.detect_size < 16 or args.det_upsample < 0:
        raise OptionError('--min_eye_dist must be >= 0, --detect_size >= 16 and --det_upsample >= 0')


# ---------------------------------------------------------------------------------------------------------------
# restoring one face / super-resolving one image


class FaceRestorer:
    """A face network applied to one aligned HWC BGR uint8 face (resized to the face size when it differs).

    Args:
        net (VQRestorer): A face network (``img_size``) in eval mode.
        decode_kwargs (dict): Its decoding options (:func:`decode_options`).
        device (torch.device): Where it runs.
    """

    def __init__(self, net, decode_kwargs, device):
        self.net, self.decode_kwargs, self.device = net, decode_kwargs, device
        self.size = net.img_size

    def __call__(self, face, gray=None):
        """Restored face (``size`` x ``size``); gray when ``gray`` (default: when the face itself is gray), since the
        network may hallucinate colour."""
        import cv2
        import torch

        from basicsr_sinca.utils.inference import img2input, is_gray, output2img
        gray = is_gray(face) if gray is None else gray
        if face.shape[:2] != (self.size, self.size):
            face = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        low, high = self.net.image_range
        with torch.no_grad():
            x = low + (high - low) * img2input(face, self.device, normalize=False)
            out = output2img(self.net.restore(x, **self.decode_kwargs).image, self.net.image_range)
        if gray:
            out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return out


def super_resolve(net, img, device, max_size=600, tile_size=240, tile_pad=16, log=print):
    """HWC BGR uint8 -> (1, 3, sH, sW) tensor in [0, 1] (clamped): whole when it has at most ``max_size``² pixels
    (retried in tiles when that runs out of memory), else in tiles."""
    import torch

    from basicsr_sinca.utils.inference import img2input
    x = img2input(img, device, normalize=False)
    with torch.no_grad():
        if x.shape[-2] * x.shape[-1] <= max_size**2:
            try:
                return net.test(x).clamp(0, 1)
            except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if not isinstance(err, MemoryError) and 'out of memory' not in str(err).lower():
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log(f'{tuple(x.shape[-2:])}: out of memory in one piece, retrying in tiles of {tile_size}')
        out = net.test_tile(x, tile_size, tile_pad)
    return out.clamp(0, 1)


def maps_figure(net, img, out, device):
    """The restored image (HWC BGR uint8) beside each of the network's maps, colour-coded on one shared scale per
    map group (``visual_maps``); None when the network has none."""
    import cv2
    import numpy as np
    import torch

    from basicsr_sinca.utils.analysis import image_grid
    from basicsr_sinca.utils.inference import img2input
    with torch.no_grad():
        maps = net.visual_maps(img2input(img, device, normalize=False))
    if not maps:
        return None
    cells, labels = [out], ['output']
    for name, group in maps.items():
        group = group[0].float().cpu().numpy()
        low, high = float(group.min()), float(group.max())
        for k, m in enumerate(group):
            scaled = np.uint8(np.round(255 * (m - low) / max(high - low, 1e-12)))
            cells.append(cv2.applyColorMap(scaled, cv2.COLORMAP_VIRIDIS))
            labels.append(f'{name} {k}')
    return image_grid([cells], labels, scale=1)


class BackgroundUpsampler:
    """Upsample a whole photo by ``scale``: an SR network of the package (its output resized to exactly ``scale``
    times the input when its own factor differs), or bicubic resizing; ``scale`` 1 returns the image itself."""

    def __init__(self, scale, net=None, device=None, tiling=(600, 240, 16)):
        self.scale, self.net, self.device, self.tiling = scale, net, device, tiling

    @property
    def name(self):
        if self.scale == 1:
            return 'none'
        return type(self.net).__name__ if self.net is not None else 'bicubic'

    def __call__(self, img, log=print):
        import cv2

        from basicsr_sinca.utils.inference import output2img
        if self.scale == 1:
            return img.copy()
        size = (img.shape[1] * self.scale, img.shape[0] * self.scale)
        if self.net is None:
            return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
        out = output2img(super_resolve(self.net, img, self.device, *self.tiling, log=log), (0, 1))
        if out.shape[:2] != (size[1], size[0]):
            out = cv2.resize(out, size, interpolation=cv2.INTER_CUBIC if out.shape[1] < size[0] else cv2.INTER_AREA)
        return out


# ---------------------------------------------------------------------------------------------------------------
# one input per mode


def detect_faces(detector, img, detect_size):
    """Faces of ``img``; photos whose longer side exceeds ``detect_size`` are downscaled for detection."""
    import cv2
    longer = max(img.shape[:2])
    if longer <= detect_size:
        return detector.detect(img)
    factor = detect_size / longer
    small = cv2.resize(img, (round(img.shape[1] * factor), round(img.shape[0] * factor)), interpolation=cv2.INTER_AREA)
    return [f.scaled(img.shape[1] / small.shape[1]) for f in detector.detect(small)]


def restore_photo(path, name, ctx):
    """Whole photo: detect, align, restore, paste back; returns the report of the input (a dict)."""
    from basicsr_sinca.utils import face_helper as fh
    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import is_gray, read_image
    args, restorer = ctx['args'], ctx['restorer']
    img = read_image(path)
    gray = is_gray(img)
    faces = detect_faces(ctx['detector'], img, args.detect_size)
    entries = [{'box': [round(float(v), 2) for v in f.box], 'score': round(f.score, 4),
                'landmarks': [[round(float(v), 2) for v in p] for p in f.landmarks],
                'eye_distance': round(f.eye_distance, 2), 'restored': False} for f in faces]
    for f, e in zip(faces, entries):
        if f.eye_distance < args.min_eye_dist:
            e['skipped'] = f'eye distance {f.eye_distance:.1f} px < --min_eye_dist {args.min_eye_dist:g}'
    candidates = [k for k, e in enumerate(entries) if 'skipped' not in e]
    if args.only_center_face and len(candidates) > 1:
        centre = fh.center_face([faces[k] for k in candidates], img.shape)
        for k in candidates:
            if faces[k] is not centre:
                entries[k]['skipped'] = 'not the centre face (--only_center_face)'
        candidates = [k for k in candidates if faces[k] is centre]
    result = ctx['upsampler'](img, log=ctx['log'])
    scale = ctx['upsampler'].scale
    for k in candidates:  # numbered as detected (faces.json's order), best score first
        matrix = fh.alignment_matrix(faces[k], restorer.size)
        crop = fh.warp_face(img, matrix, restorer.size)
        restored = restorer(crop, gray=gray)
        if args.save_faces:
            atomic_imwrite(crop, osp.join(args.output, 'cropped_faces', f'{name}_{k:02d}.png'))
            atomic_imwrite(restored, osp.join(args.output, 'restored_faces', f'{name}_{k:02d}.png'))
        mask = ctx['parser'].mask(restored) if ctx['parser'] is not None else None
        result, box = fh.paste_face(result, restored, matrix, scale, mask)
        entries[k].update(restored=True, pasted_box=list(box))
    atomic_imwrite(result, osp.join(args.output, 'final_results', f'{name}.png'))
    done = sum(e['restored'] for e in entries)
    if not faces:
        what = 'no face detected; written as the input' + (f' upsampled x{scale}' if scale != 1 else '')
    else:
        listed = '; '.join(f"#{k} box ({', '.join(f'{v:.0f}' for v in e['box'])}) score {e['score']:.2f}"
                           + (f" skipped: {e['skipped']}" if 'skipped' in e else '') for k, e in enumerate(entries))
        what = f'{len(faces)} face(s) detected, {done} restored: {listed}'
    ctx['log'](f'{osp.basename(path)}: {what}')
    return {'input': path, 'output': osp.join(args.output, 'final_results', f'{name}.png'),
            'size': [img.shape[1], img.shape[0]], 'gray': gray, 'faces': entries,
            'status': 'no face' if not faces else f'{done} face(s) restored'}


def restore_aligned(path, name, ctx):
    """Aligned crop: restored at the face size into ``restored_faces/<name>.png``."""
    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import read_image
    atomic_imwrite(ctx['restorer'](read_image(path)), osp.join(ctx['args'].output, 'restored_faces', f'{name}.png'))


def super_resolve_file(path, name, ctx):
    """SR: ``<name>.png`` (alpha upscaled and kept, 16-bit kept) and, with ``--maps``, ``maps/<name>_maps.png``."""
    import cv2
    import numpy as np

    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import output2img, read_image_layers
    args, net, device = ctx['args'], ctx['net'], ctx['device']
    img, alpha, depth = read_image_layers(path)
    out = super_resolve(net, img, device, args.max_size, args.tile_size, args.tile_pad, log=ctx['log'])
    result = output2img(out, (0, 1), np.uint16 if depth == 16 else np.uint8)
    if alpha is not None:
        up = cv2.resize(alpha, (result.shape[1], result.shape[0]), interpolation=cv2.INTER_CUBIC)
        result = np.dstack([result, up.astype(result.dtype) * (257 if depth == 16 else 1)])
    atomic_imwrite(result, osp.join(args.output, f'{name}.png'))
    if args.maps and img.shape[0] * img.shape[1] <= args.max_size**2:
        figure = maps_figure(net, img, output2img(out, (0, 1)), device)
        if figure is not None:
            atomic_imwrite(figure, osp.join(args.output, 'maps', f'{name}_maps.png'))


# ---------------------------------------------------------------------------------------------------------------


def setup(args):
    """Everything before the first input: inputs, output folder, networks, detector. Returns the context dict."""
    from tqdm import tqdm

    from basicsr_sinca.utils import face_helper as fh
    from basicsr_sinca.utils.inference import check_output_folder
    from basicsr_sinca.utils.options import OptionError
    if args.tile_size < 8 or args.tile_pad < 0:
        raise OptionError('--tile_size must be >= 8 and --tile_pad >= 0')
    inputs = list_input_files(args.input)
    check_output_folder(args.output, inputs)
    device = resolve_device(args.device)
    args.opt = args.opt or DEFAULT_OPT
    net, kind = load_network(args.opt, args.model_path, args.param_key, device)
    check_mode_options(args, kind, net)
    ctx = {'args': args, 'inputs': inputs, 'device': device, 'net': net, 'kind': kind, 'log': tqdm.write}
    if kind == 'sr':
        ctx['mode'] = 'sr'
        return ctx
    ctx['restorer'] = FaceRestorer(net, decode_options(net, args), device)
    if args.has_aligned:
        ctx['mode'] = 'aligned'
        return ctx
    ctx['mode'] = 'photo'
    bg_net = None
    if args.bg_opt:
        bg_net, bg_kind = load_network(args.bg_opt, args.bg_model_path, None, device)
        if bg_kind != 'sr':
            raise OptionError(f'--bg_opt {args.bg_opt}: {type(bg_net).__name__} is not an SR network')
    ctx['upsampler'] = BackgroundUpsampler(args.scale or 1, bg_net, device, (args.max_size, args.tile_size,
                                                                             args.tile_pad))
    try:
        ctx['detector'] = fh.build_detector(args.detector, args.face_model_dir, device, not args.no_download,
                                            args.det_threshold, args.det_upsample)
    except fh.FaceHelperError as err:
        raise OptionError(str(err)) from None
    parse_file = osp.join(args.face_model_dir, fh.PARSENET_FILE)
    ctx['parser'] = None
    if not args.no_parse and osp.isfile(parse_file):
        try:
            ctx['parser'] = fh.FaceParser(parse_file, device)
        except ImportError:
            raise OptionError(f'{parse_file}: the parsing mask needs facexlib: pip install "basicsr_sinca[face]" '
                              '(or --no_parse)') from None
    return ctx


def main(argv=None):
    """Entry point of ``sinca-restore`` / ``python -m basicsr_sinca.restore``; returns the exit status (0 every input
    written, 1 some failed, 2 nothing started)."""
    args = parse_args(argv)
    from tqdm import tqdm

    from basicsr_sinca.utils.file_io import atomic_open
    from basicsr_sinca.utils.inference import failure_message, output_stems, report_written
    from basicsr_sinca.utils.options import OptionError
    try:
        ctx = setup(args)
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    mode, inputs = ctx['mode'], ctx['inputs']
    if mode == 'photo':
        print(f"faces: {ctx['detector'].name} detector, {type(ctx['net']).__name__} at {ctx['restorer'].size} px, "
              f"parsing mask {'on' if ctx['parser'] else 'off'}, background x{ctx['upsampler'].scale} "
              f"({ctx['upsampler'].name})")
    work = {'photo': restore_photo, 'aligned': restore_aligned, 'sr': super_resolve_file}[mode]
    desc = {'photo': 'restoring photos', 'aligned': 'restoring faces', 'sr': f"x{ctx['net'].scale_factor} SR"}[mode]
    stems, notes = output_stems(inputs)
    skipped, written, reports = [], 0, []
    for path in tqdm(inputs, desc=desc, unit='img'):
        try:
            report = work(path, stems[path], ctx)
        except Exception as err:  # noqa: BLE001 - one bad input (unreadable, out of memory, ...) ends only itself
            skipped.append(failure_message(path, err))
            tqdm.write(f'failed: {skipped[-1]}')
            reports.append({'input': path, 'status': 'failed', 'error': skipped[-1]})
            continue
        written += 1
        if report is not None:
            reports.append(report)
    if mode == 'photo':
        restored = [r for r in reports if r['status'] != 'failed']
        faces = sum(e['restored'] for r in restored for e in r['faces'])
        without = sum(1 for r in restored if r['status'] == 'no face')
        small = sum('skipped' in e for r in restored for e in r['faces'])
        print(f'{faces} face(s) restored; {without} image(s) with no face; {small} face(s) skipped')
        if inputs and (written or skipped):
            with atomic_open(osp.join(args.output, 'faces.json'), 'w') as f:
                json.dump({'detector': ctx['detector'].name, 'face_size': ctx['restorer'].size,
                           'scale': ctx['upsampler'].scale, 'inputs': reports}, f, indent=1)
    what = 'image(s) written to' if mode == 'sr' else 'image(s) restored into'
    return report_written(written, skipped, inputs, args.output, what, notes)


if __name__ == '__main__':
    sys.exit(main())
