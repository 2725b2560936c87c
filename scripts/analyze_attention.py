#!/usr/bin/env python
"""SinCA attention analysis, per codebook with an attention bottleneck: per layer, how much attention goes to the
LQ tokens vs the codebook; and the attention maps of a few query positions (paper Fig. 7).

The split is averaged over the images, heads and query positions of a dataset from the option file; the maps
are those of the first image (heads averaged): per layer, a heat map over the LQ tokens and the sorted weights
over the codebook items. Needs at least one bottleneck with attention (``sinca``, ``sa``, ``ca``,
``sinca_index``). JSON (``attention.json``) + PNGs (``attention_split.png``; ``attention_maps_q<k>.png``, with
``_c<i>`` before ``_q`` when the network has several codebooks).

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
    import torch

    from basicsr_sinca.archs.restorer_arch import codebook_suffix
    from basicsr_sinca.utils.analysis import (attention_split, load_for_analysis, plot_attention_maps,
                                              plot_attention_split)
    from basicsr_sinca.utils.file_io import atomic_open
    from basicsr_sinca.utils.options import OptionError
    if len(args.queries) % 2:
        print('error: --queries takes (row, col) pairs', file=sys.stderr)
        return 2
    try:
        net, _, dataset = load_for_analysis(args.opt, args.model_path, args.param_key, args.prior, args.dataset,
                                            args.device)
        attending = [i for i, b in enumerate(net.bottlenecks) if b.has_attention]
        if not attending:
            types = [b.type_name for b in net.bottlenecks]
            raise ValueError(f'no bottleneck with attention to analyse (bottlenecks: {types})')
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    n = len(net.codebooks)
    splits, first = [], None
    with torch.no_grad():
        for lq, _, name in iterate_pairs(dataset, args.device, args.max_images):
            latents, _ = net.encode(lq)
            splits.append(attention_split(net, latents))
            if first is None:
                first = (lq, latents, osp.basename(name))
    lq, latents, name = first
    low, high = net.image_range
    image = ((lq[0].permute(1, 2, 0).cpu().numpy() - low) / (high - low)).clip(0, 1)
    os.makedirs(args.output, exist_ok=True)
    codebooks, panels = [], {}
    for i in attending:
        layers = [{'self': float(np.mean([s[i][k]['self'] for s in splits])),
                   'codebook': float(np.mean([s[i][k]['codebook'] for s in splits]))} for k in range(len(splits[0][i]))]
        bottleneck = net.bottlenecks[i]
        panels[f'codebook {i}: {bottleneck.type_name}' if n > 1 else bottleneck.type_name] = layers
        h, w = latents[i].shape[-2:]
        pairs = zip(args.queries[::2], args.queries[1::2])
        queries = [min(h - 1, int(r * h)) * w + min(w - 1, int(c * w)) for r, c in pairs]
        maps = bottleneck.attention_maps(latents[i], net.codebooks[i], queries)
        for qi, q in enumerate(queries):
            plot_attention_maps(image, [m[:, :, qi:qi + 1] for m in maps], (h, w), q,
                                osp.join(args.output, f'attention_maps{codebook_suffix(i, n)}_q{qi}.png'),
                                bottleneck.attention_mode)
        codebooks.append({'codebook': i, 'bottleneck': bottleneck.type_name, 'layers': layers, 'queries': queries,
                          'latent_hw': [h, w]})
    plot_attention_split(panels, osp.join(args.output, 'attention_split.png'))
    result = {'model': args.model_path, 'images': len(splits), 'map_image': name, 'codebooks': codebooks}
    with atomic_open(osp.join(args.output, 'attention.json'), 'w') as f:
        json.dump(result, f, indent=2)
    for c in codebooks:
        print(f"codebook {c['codebook']} ({c['bottleneck']}) self mass per layer: "
              + ' '.join(f"{d['self']:.3f}" for d in c['layers']))
    print(f'-> {args.output}')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
