#!/usr/bin/env python
"""Super-resolve a folder of images (x2 / x4) with any SR network of the package: FeMaSR, AdaCode, with their own
or a SinCA bottleneck (the network from ``--opt``; default: the official FeMaSRNet).

Small images go through the network's ``test`` (FeMaSR's mirror padding to the window grid); images over
``--max_size``² LR pixels are tiled (``--tile_size`` LR pixels with ``--tile_pad`` pixels of context).
Gray images are restored as colour images of gray content; an alpha channel is upscaled (bicubic) and kept;
16-bit inputs give 16-bit outputs. PNG outputs are written atomically as ``<output>/<name>.png``; unreadable
or too small inputs are reported by name and skipped. ``--maps`` also writes ``<name>_maps.png``: the restored
image beside the network's maps (AdaCode: the weight of each category codebook), for images that are not tiled.

Examples::

    # the released FeMaSR x4
    python scripts/inference_sr.py -i inputs -o results/femasr_x4 -s 4 \\
        --model_path experiments/pretrained_models/FeMaSR/FeMaSR_SRX4_model_g.pth
    # AdaCode + SinCA trained with this package, with its weight maps
    python scripts/inference_sr.py -i inputs -o results/adacode_sinca_x4 -s 4 --maps \\
        --opt options/train/adacode/x4_sinca.yml --model_path experiments/AdaCode_x4_sinca/models/net_g_best.pth
"""
import argparse
import sys
from os import path as osp


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-i', '--input', required=True, help='an image or a folder of images')
    parser.add_argument('-o', '--output', default='results/sr', help='output folder (default: results/sr)')
    parser.add_argument('-s', '--out_scale', type=int, default=4, choices=[2, 4], help='SR factor (default 4)')
    parser.add_argument('--model_path', required=True, help='checkpoint (.pth) of the network')
    parser.add_argument('--param_key', default=None,
                        help='key inside the checkpoint, e.g. params_ema for EMA weights; a key the file lacks is an '
                        'error (default: params, else params_ema)')
    parser.add_argument('--opt', default=None,
                        help='option file whose network_g describes the network (default: the official FeMaSRNet)')
    parser.add_argument('--max_size', type=int, default=600,
                        help='LR images with more than max_size^2 pixels are tiled (default 600)')
    parser.add_argument('--tile_size', type=int, default=240, help='tile size in LR pixels (default 240)')
    parser.add_argument('--tile_pad', type=int, default=16, help='context around each tile in LR pixels (default 16)')
    parser.add_argument('--maps', action='store_true',
                        help="also write <name>_maps.png: the output beside the network's maps (AdaCode's weights)")
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    return parser.parse_args(argv)


def load_network(args, device):
    from basicsr_sinca.archs.femasr_arch import FeMaSRNet
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    if args.opt:
        net = build_net_from_options(args.opt)
        if not hasattr(net, 'test_tile'):
            raise ValueError(f'{args.opt}: {type(net).__name__} is not an SR network of the package (no test_tile)')
        if net.scale_factor != args.out_scale:
            raise ValueError(f'{args.opt}: network_g.scale_factor is {net.scale_factor} but -s/--out_scale is '
                             f'{args.out_scale}')
    else:
        net = FeMaSRNet(codebook_params=[[32, 1024, 512]], LQ_stage=True, scale_factor=args.out_scale)
    state_dict, used = read_state_dict(args.model_path, args.param_key or 'params',
                                       ('params', 'params_ema') if args.param_key is None else ())
    load_state_dict_report(net, state_dict, strict=True, source=f'{args.model_path} [{used}]')
    return net.to(device).eval()


def super_resolve(net, img, args, device):
    """HWC BGR uint8 -> (1, 3, sH, sW) tensor in [0, 1] (clamped)."""
    import torch

    from basicsr_sinca.utils.inference import img2input
    x = img2input(img, device, normalize=False)
    with torch.no_grad():
        if x.shape[-2] * x.shape[-1] <= args.max_size**2:
            try:
                return net.test(x).clamp(0, 1)
            except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if not isinstance(err, MemoryError) and 'out of memory' not in str(err).lower():
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(f'{tuple(x.shape[-2:])}: out of memory in one piece, retrying in tiles of {args.tile_size}')
        out = net.test_tile(x, args.tile_size, args.tile_pad)
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


def main(argv=None):
    args = parse_args(argv)
    import cv2
    import numpy as np
    import torch
    from tqdm import tqdm

    from basicsr_sinca.utils.file_io import atomic_imwrite
    from basicsr_sinca.utils.inference import (check_output_folder, failure_message, list_inputs, output2img,
                                               output_stems, read_image_layers, report_written)
    from basicsr_sinca.utils.options import OptionError

    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if args.device == 'auto' else args.device))
    if args.tile_size < 8 or args.tile_pad < 0:
        print('error: --tile_size must be >= 8 and --tile_pad >= 0', file=sys.stderr)
        return 2
    try:
        inputs = list_inputs(args.input)
        check_output_folder(args.output, inputs)
        net = load_network(args, device)
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    stems, notes = output_stems(inputs)
    skipped, written = [], 0
    for path in tqdm(inputs, desc=f'x{args.out_scale} SR', unit='img'):
        try:
            img, alpha, depth = read_image_layers(path)
            out = super_resolve(net, img, args, device)
            result = output2img(out, (0, 1), np.uint16 if depth == 16 else np.uint8)
            if alpha is not None:
                up = cv2.resize(alpha, (result.shape[1], result.shape[0]), interpolation=cv2.INTER_CUBIC)
                result = np.dstack([result, up.astype(result.dtype) * (257 if depth == 16 else 1)])
            atomic_imwrite(result, osp.join(args.output, f'{stems[path]}.png'))
        except Exception as err:  # noqa: BLE001 - one bad input (unreadable, out of memory, ...) ends only itself
            skipped.append(failure_message(path, err))
            tqdm.write(f'failed: {skipped[-1]}')
            continue
        written += 1
        if args.maps and img.shape[0] * img.shape[1] <= args.max_size**2:
            figure = maps_figure(net, img, output2img(out, (0, 1)), device)
            if figure is not None:
                atomic_imwrite(figure, osp.join(args.output, 'maps', f'{stems[path]}_maps.png'))
    return report_written(written, skipped, inputs, args.output, 'image(s) written to', notes)


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
