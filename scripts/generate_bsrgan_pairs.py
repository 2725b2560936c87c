#!/usr/bin/env python
"""Pre-generate LR/HR training pairs with BSRGAN's degradation (FeMaSR's LQ-stage data), reproducibly.

Each HR image (optionally cut into sub-images first) is degraded with a generator seeded by --seed and the
output name, so a pair does not depend on the order, on other files, on interruptions or on how many processes
share the work.
Writes ``<out>/HR/<name>.png`` (the HR, mod-cropped to the scale) and ``<out>/LR_X<scale>/<name>.png``
atomically; unreadable inputs are reported by name and skipped; existing outputs are kept (--overwrite).

Example::

    python scripts/generate_bsrgan_pairs.py -i datasets/DIV2K/DIV2K_train_HR -o datasets/DIV2K_bsrgan \\
        --scale 4 --crop_size 512 --step 384 --seed 123
"""
import argparse
import sys
import zlib
from os import path as osp


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-i', '--input', required=True, help='folder of HR images')
    parser.add_argument('-o', '--output', required=True, help='output folder (HR/ and LR_X<scale>/ inside)')
    parser.add_argument('--scale', type=int, default=4, choices=[2, 3, 4], help='SR factor (default 4)')
    parser.add_argument('--crop_size', type=int, default=0, help='cut HR images into sub-images of this size '
                        '(0: whole images, default)')
    parser.add_argument('--step', type=int, default=0, help='stride between sub-images (default: crop_size)')
    parser.add_argument('--seed', type=int, default=123, help='base seed (default 123)')
    parser.add_argument('--overwrite', action='store_true', help='regenerate existing outputs')
    return parser.parse_args(argv)


def sub_images(img, crop, step):
    """(suffix, crop) pairs covering ``img`` with a grid of ``crop`` windows (the last ones flush right/bottom)."""
    h, w = img.shape[:2]
    if not crop or (h <= crop and w <= crop):
        return [('', img)]
    tops = sorted(set(list(range(0, max(h - crop, 0) + 1, step)) + [max(h - crop, 0)]))
    lefts = sorted(set(list(range(0, max(w - crop, 0) + 1, step)) + [max(w - crop, 0)]))
    return [(f'_s{i * len(lefts) + j + 1:03d}', img[top:top + crop, left:left + crop])
            for i, top in enumerate(tops) for j, left in enumerate(lefts)]


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    from tqdm import tqdm

    from basicsr_sinca.data.bsrgan_degradation import degradation_bsrgan
    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import check_output_folder, list_inputs, output_stems, read_image

    try:
        inputs = list_inputs(args.input)
        check_output_folder(args.output, inputs)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    hr_dir, lr_dir = osp.join(args.output, 'HR'), osp.join(args.output, f'LR_X{args.scale}')
    stems, notes = output_stems(inputs)
    skipped, written, kept = [], 0, 0
    for path in tqdm(inputs, desc=f'BSRGAN x{args.scale}', unit='img'):
        try:
            img = read_image(path)
        except ValueError as err:
            skipped.append(str(err))
            continue
        name = stems[path]
        for suffix, crop in sub_images(img, args.crop_size, args.step or args.crop_size):
            out_name = f'{name}{suffix}.png'
            done = osp.isfile(osp.join(lr_dir, out_name)) and osp.isfile(osp.join(hr_dir, out_name))
            if done and not args.overwrite:
                kept += 1
                continue
            rng = np.random.default_rng([args.seed, zlib.crc32(out_name.encode())])
            try:
                lq, hq = degradation_bsrgan(crop.astype(np.float32) / 255.0, args.scale, rng)
            except ValueError as err:
                skipped.append(f'{path}: {err}')
                continue
            atomic_imwrite((hq * 255.0).round().astype(np.uint8), osp.join(hr_dir, out_name))
            atomic_imwrite((np.clip(lq, 0, 1) * 255.0).round().astype(np.uint8), osp.join(lr_dir, out_name))
            written += 1
    for note in notes:
        print(f'  renamed: {note}')
    print(f'{written} pair(s) written to {args.output}, {kept} already there (kept; --overwrite); '
          f'{len(skipped)} input(s) failed')
    for msg in skipped:
        print(f'  failed: {msg}')
    return 1 if skipped else 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
