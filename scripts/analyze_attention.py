#!/usr/bin/env python
"""SinCA attention analysis: per layer, how much attention goes to the LQ tokens vs the codebook; and the
attention maps of a few query positions (paper Fig. 7).

The split is averaged over the images, heads and query positions of a dataset from the option file; the maps
are those of the first image (heads averaged): per layer, a heat map over the LQ tokens and the sorted weights
over the codebook items. Needs a ``sinca`` / ``sa`` / ``ca`` / ``sinca_index`` bottleneck. JSON + PNGs.

Example::

    python scripts/analyze_attention.py --opt options/train/codeformer/stage2_sinca.yml \\
        --model_path experiments/CodeFormer_stage2_sinca/models/net_g_latest.pth -o results/analysis/attention
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
    parser.add_argument('--queries', type=float, nargs='+', default=[0.5, 0.5],
                        help='query positions as (row, col) fractions of the latent, pairs (default: centre)')
    args = parser.parse_args(argv)
    import numpy as np

    from basicsr_sinca.utils.analysis import (attention_split, load_for_analysis, plot_attention_maps,
                                              plot_attention_split)
    from basicsr_sinca.utils.file_io import atomic_open
    from basicsr_sinca.utils.options import OptionError
    if len(args.queries) % 2:
        print('error: --queries takes (row, col) pairs', file=sys.stderr)
        return 2
    try:
        probe, _, dataset = load_for_analysis(args.opt, args.model_path, args.param_key, args.prior, args.dataset,
                                              args.device)
        if probe.transformer is None:
            raise ValueError(f'bottleneck {probe.net.bottleneck_type!r} has no attention to analyse')
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    splits, first = [], None
    for lq, _, name in iterate_pairs(dataset, args.device, args.max_images):
        lq_feat, _ = probe.latent(lq)
        splits.append(attention_split(probe, lq_feat))
        if first is None:
            first = (lq, lq_feat, osp.basename(name))
    layers = [{'self': float(np.mean([s[i]['self'] for s in splits])),
               'codebook': float(np.mean([s[i]['codebook'] for s in splits]))} for i in range(len(splits[0]))]
    os.makedirs(args.output, exist_ok=True)
    plot_attention_split(layers, osp.join(args.output, 'attention_split.png'),
                         title=f'{probe.net.bottleneck_type}: attention mass per layer')
    lq, lq_feat, name = first
    h, w = lq_feat.shape[-2:]
    pairs = zip(args.queries[::2], args.queries[1::2])
    queries = [min(h - 1, int(r * h)) * w + min(w - 1, int(c * w)) for r, c in pairs]
    maps = probe.transformer.attention_maps(lq_feat, probe.codebook, queries)
    low, high = probe.image_range
    image = ((lq[0].permute(1, 2, 0).cpu().numpy() - low) / (high - low)).clip(0, 1)
    for qi, q in enumerate(queries):
        plot_attention_maps(image, [m[:, :, qi:qi + 1] for m in maps], (h, w), q,
                            osp.join(args.output, f'attention_maps_q{qi}.png'), probe.transformer.mode)
    result = {'model': args.model_path, 'bottleneck': probe.net.bottleneck_type, 'images': len(splits),
              'layers': layers, 'map_image': name, 'queries': queries, 'latent_hw': [h, w]}
    with atomic_open(osp.join(args.output, 'attention.json'), 'w') as f:
        json.dump(result, f, indent=2)
    print('self mass per layer: ' + ' '.join(f"{d['self']:.3f}" for d in layers) + f'  -> {args.output}')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
