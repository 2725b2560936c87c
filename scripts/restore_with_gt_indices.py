#!/usr/bin/env python
"""Restoration with ground-truth code indices vs the model's own output (paper Fig. 2d).

For every image of a dataset from the option file, decodes (a) what the model produces from the LQ image and
(b) the HQ prior's codebook rows at the ground-truth indices (the prior's nearest codes of the GT image), for
every codebook at once, through the same decoder with the same LQ decoder context (encoder skips or fusion
taps). ``--decode KEY=VALUE`` passes the network's decoding options to both (e.g. ``--decode w=0.5`` for
CodeFormer's fidelity weight; default: the network's defaults). PSNR / SSIM (and LPIPS with ``--lpips``, which
needs local trunk weights) of both against the GT show how much a perfect index predictor would gain. JSON
(``gt_indices.json``) + a PNG grid (LQ | model | GT indices | GT).

Example::

    python scripts/restore_with_gt_indices.py --opt options/train/codeformer/stage2_retrain.yml \\
        --model_path experiments/CodeFormer_stage2_retrain/models/net_g_latest.pth -o results/analysis/gt_codes
"""
import argparse
import json
import os
import sys
from os import path as osp


def main(argv=None):
    from basicsr_sinca.utils.analysis import add_analysis_args, iterate_pairs
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(parser)
    parser.add_argument('--decode', nargs='*', default=[], metavar='KEY=VALUE',
                        help="decoding options of the network, e.g. 'w=0.5' (CodeFormer's fidelity weight)")
    parser.add_argument('--lpips', action='store_true', help='also LPIPS (needs local trunk weights, see README)')
    parser.add_argument('--grid', type=int, default=4, help='images in the PNG grid (default 4)')
    args = parser.parse_args(argv)
    import cv2
    import numpy as np
    import torch
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from basicsr_sinca.utils.analysis import (check_decode_kwargs, image_grid, load_for_analysis, parse_decode_kwargs,
                                              to_uint8)
    from basicsr_sinca.utils.file_io import atomic_imwrite, atomic_open
    from basicsr_sinca.utils.options import OptionError
    try:
        decode_kwargs = parse_decode_kwargs(args.decode)
        net, prior, dataset = load_for_analysis(args.opt, args.model_path, args.param_key, args.prior, args.dataset,
                                                args.device)
        check_decode_kwargs(net, decode_kwargs)
        if args.lpips:
            from basicsr_sinca.metrics.lpips_metric import calculate_lpips
            calculate_lpips(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    per_image, rows = [], []
    for lq, gt, name in iterate_pairs(dataset, args.device, args.max_images):
        with torch.no_grad():
            latents, context = net.encode(lq)
            feats = [out.feat for out in net.transform(latents)]
            model_out = net.decode(feats, context, **decode_kwargs)
            oracle_out = net.decode([t.feat for t in prior.prior_targets(gt)], context, **decode_kwargs)
        imgs = {k: to_uint8(v, net.image_range)
                for k, v in (('lq', lq), ('model', model_out), ('gt_indices', oracle_out), ('gt', gt))}
        if imgs['lq'].shape != imgs['gt'].shape:
            imgs['lq'] = cv2.resize(imgs['lq'], imgs['gt'].shape[1::-1], interpolation=cv2.INTER_NEAREST)
        row = {'image': osp.basename(name)}
        for k in ('model', 'gt_indices'):
            row[f'{k}_psnr'] = float(calculate_psnr(imgs[k], imgs['gt'], crop_border=0))
            row[f'{k}_ssim'] = float(calculate_ssim(imgs[k], imgs['gt'], crop_border=0))
            if args.lpips:
                row[f'{k}_lpips'] = calculate_lpips(imgs[k], imgs['gt'])
        per_image.append(row)
        if len(rows) < args.grid:
            rows.append([imgs['lq'], imgs['model'], imgs['gt_indices'], imgs['gt']])
    keys = [k for k in per_image[0] if k != 'image']
    result = {'model': args.model_path, 'bottlenecks': [b.type_name for b in net.bottlenecks],
              'decode': decode_kwargs, 'images': len(per_image),
              'mean': {k: float(np.mean([r[k] for r in per_image])) for k in keys}, 'per_image': per_image}
    os.makedirs(args.output, exist_ok=True)
    with atomic_open(osp.join(args.output, 'gt_indices.json'), 'w') as f:
        json.dump(result, f, indent=2)
    atomic_imwrite(image_grid(rows, ['LQ', 'model', 'GT indices', 'GT']), osp.join(args.output, 'gt_indices.png'))
    print('  '.join(f'{k} {v:.4f}' for k, v in result['mean'].items()) + f'  -> {args.output}')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
