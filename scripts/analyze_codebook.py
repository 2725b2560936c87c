#!/usr/bin/env python
"""Codebook usage and code-index accuracy of a trained model (paper Fig. 2a-c).

For every image of a dataset from the option file: the ground-truth indices are the HQ prior's nearest codes of
its encoder on the GT image; the predicted indices are the codes the bottleneck selects (``index``,
``sinca_index``, ``nearest``) or, for feature bottlenecks (``sinca``, ``sa``, ``ca``), the nearest codes of the
continuous output. Reports the accuracy (fraction of latent positions where they agree) and the codebook
usage (fraction of codes selected at least once) of both, as JSON and a PNG of code frequencies.

Example::

    python scripts/analyze_codebook.py --opt options/train/codeformer/stage2_sinca.yml \\
        --model_path experiments/CodeFormer_stage2_sinca/models/net_g_latest.pth -o results/analysis/stage2_sinca
"""
import argparse
import json
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
        probe, teacher, dataset = load_for_analysis(args.opt, args.model_path, args.param_key, args.prior,
                                                    args.dataset, args.device)
    except (OptionError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    preds, gts, per_image = [], [], []
    for lq, gt, name in iterate_pairs(dataset, args.device, args.max_images):
        _, aux = probe.restore(lq)
        pred = predicted_indices(probe, aux)
        target = teacher.targets(gt)[1]
        preds.append(pred.cpu())
        gts.append(target.cpu())
        per_image.append({'image': osp.basename(name), 'accuracy': index_accuracy(pred.cpu(), target.cpu())})
    pred_all, gt_all = torch.cat([p.reshape(-1) for p in preds]), torch.cat([g.reshape(-1) for g in gts])
    size = probe.codebook.shape[0]
    result = {
        'model': args.model_path, 'bottleneck': probe.net.bottleneck_type, 'images': len(per_image),
        'codebook_size': size,
        'predicted': 'selected codes' if not probe.is_feature_bottleneck else 'nearest codes of the continuous output',
        'accuracy': index_accuracy(pred_all, gt_all), 'usage_predicted': codebook_usage(pred_all, size),
        'usage_ground_truth': codebook_usage(gt_all, size), 'per_image': per_image,
    }
    import os
    os.makedirs(args.output, exist_ok=True)
    with atomic_open(osp.join(args.output, 'codebook.json'), 'w') as f:
        json.dump(result, f, indent=2)
    freq_pred = np.bincount(pred_all.numpy(), minlength=size)
    freq_gt = np.bincount(gt_all.numpy(), minlength=size)
    plot_code_stats({'predicted': {'accuracy': result['accuracy'], 'usage': result['usage_predicted']},
                     'ground truth': {'accuracy': 1.0, 'usage': result['usage_ground_truth']}},
                    osp.join(args.output, 'codebook_stats.png'))
    _plot_frequencies(freq_pred, freq_gt, osp.join(args.output, 'code_frequencies.png'))
    print(f"accuracy {result['accuracy']:.4f}  usage predicted {result['usage_predicted']:.4f}  "
          f"usage GT {result['usage_ground_truth']:.4f}  ({result['images']} images) -> {args.output}")
    return 0


def _plot_frequencies(freq_pred, freq_gt, path):
    from basicsr_sinca.utils.analysis import get_pyplot, save_figure
    plt = get_pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.8))
    order = freq_gt.argsort()[::-1]
    ax.plot(freq_gt[order], label='ground-truth codes', color='tab:green')
    ax.plot(freq_pred[order], label='predicted codes', color='tab:red', alpha=0.8)
    ax.set_xlabel('codes (sorted by ground-truth frequency)')
    ax.set_ylabel('count')
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
