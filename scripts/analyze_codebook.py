#!/usr/bin/env python
"""Codebook usage and code-index accuracy of a trained model, per codebook (paper Fig. 2a-c).

For every image of a dataset from the option file: the ground-truth indices are the HQ prior's nearest codes of
its encoder on the GT image; the predicted indices are the codes the bottleneck selects (bottlenecks that select
codes: ``index``, ``sinca_index``, ``nearest``) or, for continuous bottlenecks (``sinca``, ``sa``, ``ca``), the
nearest codes of their output. Reports, per codebook, the accuracy (fraction of latent positions where they
agree) and the codebook usage (fraction of codes selected at least once) of both, as JSON
(``codebook.json``) and PNGs (``codebook_stats.png``, ``code_frequencies.png``: one row per codebook).

Example::

    python scripts/analyze_codebook.py --opt options/train/codeformer/stage2_sinca.yml \\
        --model_path experiments/CodeFormer_stage2_sinca/models/net_g_latest.pth -o results/analysis/stage2_sinca
"""
import argparse
import json
import os
import sys
from os import path as osp


def main(argv=None):
    from basicsr_sinca.utils.analysis import add_analysis_args
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(parser)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from basicsr_sinca.utils.analysis import (codebook_usage, index_accuracy, iterate_pairs, load_for_analysis,
                                              plot_code_stats, predicted_indices)
    from basicsr_sinca.utils.file_io import atomic_open
    from basicsr_sinca.utils.options import OptionError
    try:
        net, prior, dataset = load_for_analysis(args.opt, args.model_path, args.param_key, args.prior, args.dataset,
                                                args.device)
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    n = len(net.codebooks)
    preds, gts, per_image = [[] for _ in range(n)], [[] for _ in range(n)], []
    with torch.no_grad():
        for lq, gt, name in iterate_pairs(dataset, args.device, args.max_images):
            pred = predicted_indices(net, net.restore(lq, code_only=True))
            targets = prior.prior_targets(gt)
            row = {'image': osp.basename(name), 'accuracy': []}
            for i in range(n):
                preds[i].append(pred[i].cpu().reshape(-1))
                gts[i].append(targets[i].indices.cpu().reshape(-1))
                row['accuracy'].append(index_accuracy(preds[i][-1], gts[i][-1]))
            per_image.append(row)
    codebooks, freqs = [], []
    for i, (bottleneck, codebook) in enumerate(zip(net.bottlenecks, net.codebooks)):
        pred_all, gt_all = torch.cat(preds[i]), torch.cat(gts[i])
        size = codebook.shape[0]
        codebooks.append({
            'codebook': i, 'size': size, 'bottleneck': bottleneck.type_name,
            'predicted': 'selected codes' if bottleneck.selects_codes else 'nearest codes of the continuous output',
            'accuracy': index_accuracy(pred_all, gt_all), 'usage_predicted': codebook_usage(pred_all, size),
            'usage_ground_truth': codebook_usage(gt_all, size)})
        freqs.append((np.bincount(pred_all.numpy(), minlength=size), np.bincount(gt_all.numpy(), minlength=size)))
    result = {'model': args.model_path, 'images': len(per_image), 'codebooks': codebooks, 'per_image': per_image}
    os.makedirs(args.output, exist_ok=True)
    with atomic_open(osp.join(args.output, 'codebook.json'), 'w') as f:
        json.dump(result, f, indent=2)
    stats = {}
    for c in codebooks:
        label = '' if n == 1 else f"c{c['codebook']} "
        stats[f'{label}predicted'] = {'accuracy': c['accuracy'], 'usage': c['usage_predicted']}
        stats[f'{label}ground truth'] = {'accuracy': 1.0, 'usage': c['usage_ground_truth']}
    plot_code_stats(stats, osp.join(args.output, 'codebook_stats.png'))
    _plot_frequencies(freqs, osp.join(args.output, 'code_frequencies.png'))
    for c in codebooks:
        print(f"codebook {c['codebook']} ({c['bottleneck']}, {c['size']} codes): accuracy {c['accuracy']:.4f}  "
              f"usage predicted {c['usage_predicted']:.4f}  usage GT {c['usage_ground_truth']:.4f}")
    print(f"({result['images']} images) -> {args.output}")
    return 0


def _plot_frequencies(freqs, path):
    from basicsr_sinca.utils.analysis import get_pyplot, save_figure
    plt = get_pyplot()
    fig, axes = plt.subplots(len(freqs), 1, figsize=(7, 2.8 * len(freqs)), squeeze=False)
    for i, (ax, (freq_pred, freq_gt)) in enumerate(zip(axes[:, 0], freqs)):
        order = freq_gt.argsort()[::-1]
        ax.plot(freq_gt[order], label='ground-truth codes', color='tab:green')
        ax.plot(freq_pred[order], label='predicted codes', color='tab:red', alpha=0.8)
        ax.set_xlabel('codes (sorted by ground-truth frequency)')
        ax.set_ylabel('count')
        if len(freqs) > 1:
            ax.set_title(f'codebook {i}', fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
