#!/usr/bin/env python
"""Restore faces with any face network of the package: CodeFormer, DAEFR, VQFR, with their own or a SinCA bottleneck.

The network comes from an option file (``--opt``: its ``network_g``; default: the official CodeFormer) and a
checkpoint (``--model_path``: BasicSR ``.pth`` or a released Lightning ``.ckpt``). Decoding options are passed when
the network takes them, and are an error for a network without them: ``-w`` is CodeFormer's fidelity weight
(default 0.5 there), ``--adain`` CodeFormer's colour statistics, ``--fidelity_ratio`` VQFR v2's blend of the warped
main branch (0: texture branch only, the most detail; 1: the most faithful to the input; default: the network's own).

Aligned faces (``--has_aligned``): every image is resized to the network's face size (``img_size``, 512 for the
releases) and restored as a whole. Whole images (default): faces are detected and aligned with facexlib, restored
and pasted back; this needs facexlib's weights in ``--face_model_dir`` (no download here).

Outputs (PNG, written atomically) under ``-o``: ``restored_faces/<name>.png`` (aligned: one per input; whole
images: ``<name>_<k>.png`` per face), ``cropped_faces/`` and ``final_results/<name>.png`` (whole images).

Examples::

    # the released CodeFormer on aligned faces
    python scripts/inference_face.py -i inputs/aligned -o results/cf -w 0.5 --has_aligned \\
        --model_path experiments/pretrained_models/CodeFormer/codeformer.pth
    # the released DAEFR (its Lightning checkpoint as downloaded)
    python scripts/inference_face.py -i inputs/aligned -o results/daefr --has_aligned \\
        --opt options/test/daefr/test_daefr_official.yml \\
        --model_path experiments/pretrained_models/DAEFR/DAEFR_model.ckpt
    # the released VQFR v2, halfway between its texture branch and its input-faithful main branch
    python scripts/inference_face.py -i inputs/aligned -o results/vqfr_v2 --has_aligned --fidelity_ratio 0.5 \\
        --opt options/test/vqfr/test_vqfr_v2_official.yml \\
        --model_path experiments/pretrained_models/VQFR/VQFR_v2.pth
    # a DAEFR + SinCA model trained with this package
    python scripts/inference_face.py -i inputs/aligned -o results/daefr_sinca --has_aligned \\
        --opt options/train/daefr/final_sinca.yml --model_path experiments/DAEFR_final_sinca/models/net_g_latest.pth
"""
import argparse
import sys
from os import path as osp

FACE_WEIGHTS = ('detection_Resnet50_Final.pth', 'parsing_parsenet.pth')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-i', '--input', required=True, help='an image or a folder of images')
    parser.add_argument('-o', '--output', default='results/faces', help='output folder (default: results/faces)')
    parser.add_argument('-w', '--fidelity_weight', type=float, default=None,
                        help="CodeFormer's fidelity weight w in [0, 1]: small = quality, large = fidelity "
                        '(default 0.5 for networks that take it)')
    parser.add_argument('--fidelity_ratio', type=float, default=None,
                        help="VQFR v2's fidelity ratio in [0, 1]: the blend of the warped main branch, 0 = texture "
                        "branch only (most detail), 1 = most faithful to the input (default: the network's own, 1.0)")
    parser.add_argument('--model_path', required=True, help='checkpoint (.pth) of the network')
    parser.add_argument('--param_key', default=None,
                        help='key inside the checkpoint; a key the file lacks is an error (default: params_ema, else '
                        'params)')
    parser.add_argument('--opt', default=None,
                        help='option file whose network_g describes the network (default: the official CodeFormer)')
    parser.add_argument('--adain', choices=['auto', 'on', 'off'], default='auto',
                        help="CodeFormer's AdaIN of the bottleneck output to the LQ statistics (auto: on for "
                        'bottlenecks that select codes, index/nearest/sinca_index, as CodeFormer; off for feature '
                        'transformers)')
    parser.add_argument('--has_aligned', action='store_true', help='inputs are aligned, cropped faces')
    parser.add_argument('--face_model_dir', default='experiments/pretrained_models/facexlib',
                        help=f'folder with facexlib weights {", ".join(FACE_WEIGHTS)} (whole-image mode)')
    parser.add_argument('--only_center_face', action='store_true', help='restore only the face nearest the centre')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    return parser.parse_args(argv)


def load_network(args, device):
    from basicsr_sinca.archs.codeformer_arch import CodeFormer
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import OptionError
    net = build_net_from_options(args.opt) if args.opt else CodeFormer(vqgan_path=None)
    if not net.img_size:
        raise OptionError(f'{args.opt}: {type(net).__name__} has no face size (img_size); it is not a face network')
    state_dict, used = read_state_dict(args.model_path, args.param_key or 'params_ema',
                                       ('params_ema', 'params', 'state_dict') if args.param_key is None else ())
    load_state_dict_report(net, state_dict, strict=True, source=f'{args.model_path} [{used}]')
    return net.to(device).eval()


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


def make_restorer(net, decode_kwargs, device):
    import cv2
    import torch

    from basicsr_sinca.utils.inference import img2input, is_gray, output2img
    size = net.img_size
    low, high = net.image_range

    def restore(face):
        gray = is_gray(face)
        if face.shape[:2] != (size, size):
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
        with torch.no_grad():
            x = low + (high - low) * img2input(face, device, normalize=False)
            out = output2img(net.restore(x, **decode_kwargs).image, net.image_range)
        if gray:  # a gray photo stays gray (the network may hallucinate colour)
            out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return out

    return restore


def make_face_helper(args, net, device):
    from basicsr_sinca.utils.options import OptionError
    missing = [f for f in FACE_WEIGHTS if not osp.isfile(osp.join(args.face_model_dir, f))]
    if missing:
        raise OptionError(f'whole-image mode needs facexlib weights {", ".join(missing)} in {args.face_model_dir} '
                          '(from https://github.com/xinntao/facexlib/releases; no download here), or use '
                          '--has_aligned for aligned face crops')
    try:
        from facexlib.utils.face_restoration_helper import FaceRestoreHelper
    except ImportError:
        raise OptionError('whole-image mode needs facexlib: pip install "basicsr_sinca[face]"') from None
    return FaceRestoreHelper(1, face_size=net.img_size, crop_ratio=(1, 1), det_model='retinaface_resnet50',
                             save_ext='png', use_parse=True, device=device, model_rootpath=args.face_model_dir)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from basicsr_sinca.utils.inference import (check_output_folder, failure_message, list_inputs, output_stems,
                                               report_written)
    from basicsr_sinca.utils.options import OptionError

    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if args.device == 'auto' else args.device))
    try:
        inputs = list_inputs(args.input)
        check_output_folder(args.output, inputs)
        net = load_network(args, device)
        decode_kwargs = decode_options(net, args)
        helper = None if args.has_aligned else make_face_helper(args, net, device)
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    restore = make_restorer(net, decode_kwargs, device)

    stems, notes = output_stems(inputs)
    skipped, written = [], 0
    for path in tqdm(inputs, desc='restoring', unit='img'):
        try:
            restore_one(path, stems[path], restore, helper, args)
        except Exception as err:  # noqa: BLE001 - one bad input (unreadable, out of memory, ...) ends only itself
            skipped.append(failure_message(path, err))
            tqdm.write(f'failed: {skipped[-1]}')
            continue
        written += 1
    return report_written(written, skipped, inputs, args.output, 'image(s) restored into', notes)


def restore_one(path, name, restore, helper, args):
    """Restore one input into ``<output>/restored_faces/<name>*.png`` (and, for whole images, the cropped faces and
    ``final_results/<name>.png``)."""
    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import read_image
    img = read_image(path)
    if helper is None:
        atomic_imwrite(restore(img), osp.join(args.output, 'restored_faces', f'{name}.png'))
        return
    helper.clean_all()
    helper.read_image(img)
    helper.get_face_landmarks_5(only_center_face=args.only_center_face, resize=640, eye_dist_threshold=5)
    helper.align_warp_face()
    for k, face in enumerate(helper.cropped_faces):
        restored = restore(face)
        helper.add_restored_face(restored)
        atomic_imwrite(face, osp.join(args.output, 'cropped_faces', f'{name}_{k:02d}.png'))
        atomic_imwrite(restored, osp.join(args.output, 'restored_faces', f'{name}_{k:02d}.png'))
    helper.get_inverse_affine(None)
    final = helper.paste_faces_to_input_image() if helper.restored_faces else img
    atomic_imwrite(final, osp.join(args.output, 'final_results', f'{name}.png'))


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
