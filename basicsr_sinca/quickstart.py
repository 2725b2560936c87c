"""Offline quickstart: the paper's Table 3/4 comparison in miniature, on CPU.

1. Data: 64x64 crops of scikit-image's bundled photographs — training crops from six photos, held-out
   evaluation crops from another (the motorcycle of ``stereo_motorcycle``); the split is recorded.
2. Stage 1: a tiny VQGAN prior (CodeFormer's stage-1 recipe) through BasicSR's pipeline
   (``options/quickstart/prior.yml``).
3. Restoration stage (CodeFormer stage 2) once per bottleneck — ``nearest``, ``index``, ``sa``, ``ca``, ``sinca`` —
   and per seed, with identical budgets, data and seeds (``options/quickstart/restore.yml``).
4. Evaluation on the held-out crops degraded with CodeFormer's blind pipeline (fixed seed): PSNR, SSIM, NIQE
   (when the crops are large enough), LPIPS (when local trunk weights exist), code-index accuracy against the
   prior's codes of the GT and codebook usage; mean ± std over seeds.

Writes ``results.md`` (the table), ``results.json``, ``grid.png`` (LQ / each bottleneck / prior(GT) / GT),
``attention_split.png``, ``attention_maps.png`` and ``code_stats.png`` into the output folder, plus the data,
generated option files, logs and experiments. Deterministic for given seeds.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from os import path as osp

import numpy as np

BOTTLENECKS = {
    'nearest': {'type': 'nearest'},
    'index': {'type': 'index', 'dim_embd': 64, 'n_head': 4, 'n_layers': 2},
    'sa': {'type': 'sa', 'num_layers': 2, 'num_heads': 4, 'ffn_expansion': 2.66},
    'ca': {'type': 'ca', 'num_layers': 2, 'num_heads': 4, 'ffn_expansion': 2.66},
    'sinca': {'type': 'sinca', 'num_layers': 2, 'num_heads': 4, 'ffn_expansion': 2.66},
}
TRAIN_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera')
EVAL_PHOTO = 'stereo_motorcycle (left view)'
CROP = 64
NIQE_SIZE = 192  # BasicSR's NIQE needs about 192 px; measured on larger held-out crops


def positive_int(text):
    """argparse type: an integer >= 1 (``--seeds 0`` is an error, not the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected 1 or more, got {value}')
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m basicsr_sinca.quickstart', description=__doc__.split('\n\n')[0],
        epilog='Default: 3 seeds (about 10 minutes on 2 CPU cores); --fast: 1 seed, shorter schedules (about 3).',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='quickstart_out', help='output folder (default: ./quickstart_out)')
    parser.add_argument('--fast', action='store_true', help='1 seed and shorter schedules')
    parser.add_argument('--seeds', type=positive_int, default=None, help='number of seeds (default 3, --fast 1)')
    parser.add_argument('--prior_iters', type=positive_int, default=None,
                        help='stage-1 iterations (default 1000, --fast 400)')
    parser.add_argument('--iters', type=positive_int, default=None,
                        help='restoration iterations (default 300, --fast 200)')
    parser.add_argument('--jobs', type=positive_int, default=2,
                        help='restoration trainings run in parallel (default 2)')
    parser.add_argument('--train_crops', type=positive_int, default=15,
                        help='training crops per photo (default 15)')
    parser.add_argument('--eval_crops', type=positive_int, default=16,
                        help='held-out evaluation crops (default 16)')
    parser.add_argument('--niqe_crops', type=int, default=4,
                        help=f'held-out {NIQE_SIZE} px crops for NIQE (default 4)')
    return parser


def repo_options():
    """The quickstart's option files (packaged with the wheel, or the source checkout's ``options/quickstart``)."""
    from basicsr_sinca.utils.options import options_dir
    return osp.join(options_dir(), 'quickstart')


def make_data(out, train_crops, eval_crops, niqe_crops):
    """Crops of the training photos and of the held-out photo; returns the split record."""
    import cv2
    import skimage.data

    from basicsr_sinca.utils.sample_data import load_photo, random_crops
    rng = np.random.default_rng(0)
    train_dir, eval_dir = osp.join(out, 'datasets', 'quickstart', 'train_gt'), osp.join(out, 'datasets',
                                                                                         'quickstart', 'eval_gt')
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(eval_dir, exist_ok=True)
    for name in TRAIN_PHOTOS:
        img = load_photo(name)
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for i, crop in enumerate(random_crops(img, CROP, train_crops, rng)):
            cv2.imwrite(osp.join(train_dir, f'{name}_{i:02d}.png'), crop)
    moto = np.ascontiguousarray(skimage.data.stereo_motorcycle()[0][..., ::-1])
    moto = cv2.resize(moto, (moto.shape[1] // 2, moto.shape[0] // 2), interpolation=cv2.INTER_AREA)
    for i, crop in enumerate(random_crops(moto, CROP, eval_crops, rng)):
        cv2.imwrite(osp.join(eval_dir, f'motorcycle_{i:02d}.png'), crop)
    niqe_dir = eval_dir + f'_{NIQE_SIZE}'
    os.makedirs(niqe_dir, exist_ok=True)
    for i, crop in enumerate(random_crops(moto, NIQE_SIZE, niqe_crops, rng)):
        cv2.imwrite(osp.join(niqe_dir, f'motorcycle_{i:02d}.png'), crop)
    split = {'train_photos': list(TRAIN_PHOTOS), 'train_crops': len(TRAIN_PHOTOS) * train_crops,
             'eval_photos': [EVAL_PHOTO], 'eval_crops': eval_crops, 'crop_size': CROP,
             'niqe_crops': niqe_crops, 'niqe_crop_size': NIQE_SIZE,
             'source': 'scikit-image bundled images, downscaled by 2, random crops (seed 0)'}
    with open(osp.join(out, 'datasets', 'quickstart', 'split.json'), 'w') as f:
        json.dump(split, f, indent=2)
    return split


def write_options(out, name, base, overrides):
    """A generated option file that inherits a quickstart file and sets this run's keys."""
    import yaml
    os.makedirs(osp.join(out, 'options'), exist_ok=True)
    path = osp.join(out, 'options', f'{name}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(dict({'_base_': [base], 'name': name}, **overrides), f, sort_keys=False)
    return path


def run_training(out, opt_file, threads):
    """One training through the package's entry point (a separate process, as a user would run it)."""
    name = osp.splitext(osp.basename(opt_file))[0]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env['PYTHONPATH'] = osp.dirname(osp.dirname(osp.abspath(__file__))) + os.pathsep + env.get('PYTHONPATH', '')
    os.makedirs(osp.join(out, 'logs'), exist_ok=True)
    log = osp.join(out, 'logs', f'{name}.log')
    start = time.time()
    with open(log, 'w') as f:
        proc = subprocess.run([sys.executable, '-m', 'basicsr_sinca.train', '-opt', opt_file], cwd=out, env=env,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log) as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(f'training {name} failed (exit {proc.returncode}); log {log}:\n{tail}')
    return time.time() - start


def evaluation_set(out, size=CROP):
    """The held-out crops (``size`` px) with CodeFormer's blind degradation at a fixed seed (training ranges)."""
    from basicsr_sinca.data.ffhq_blind_dataset import FFHQBlindDataset
    from basicsr_sinca.utils.options import load_options
    opt = dict(load_options(osp.join(repo_options(), 'common.yml'))['datasets']['train'])
    folder = osp.join(out, 'datasets', 'quickstart', 'eval_gt' + ('' if size == CROP else f'_{size}'))
    opt.update(name='photos_eval', phase='val', dataroot_gt=folder, seed=2024, gt_size=size, in_size=size)
    return FFHQBlindDataset(opt)


def stack(dataset):
    import torch
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it['lq'] for it in items]), torch.stack([it['gt'] for it in items])


def lpips_status():
    """(metric function or None, reason when None)."""
    from basicsr_sinca.metrics.lpips_metric import calculate_lpips
    try:
        calculate_lpips(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), net='alex')
        return calculate_lpips, ''
    except FileNotFoundError:
        return None, 'no local AlexNet trunk weights (alexnet-owt-7be5be79.pth, see README)'


def evaluate(out, runs, prior_path, progress):
    """Metrics of every run on the held-out set, plus the images and attention data the report needs.

    Works on any network of the restorer contract. Besides PSNR/SSIM/LPIPS against the GT, two columns isolate
    the bottleneck from the (tiny, quickly trained) prior: PSNR against the prior's own reconstruction of the GT
    (what a perfect bottleneck would decode) and the latent error ||z - z_hat||^2 against the prior's quantised
    GT latent (mean over codebooks). Index accuracy and codebook usage are given for bottlenecks that select
    codes (pooled over codebooks).
    """
    import torch
    from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim

    from basicsr_sinca.utils.analysis import attention_split, codebook_usage, index_accuracy, to_uint8
    from basicsr_sinca.utils.checkpoint import read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    lq, gt = stack(evaluation_set(out))
    lq_big, gt_big = stack(evaluation_set(out, NIQE_SIZE))
    lpips_fn, lpips_reason = lpips_status()

    def niqe(imgs):
        return float(np.mean([calculate_niqe(img, crop_border=0) for img in imgs]))

    def image_metrics(imgs, refs):
        return {
            'psnr': float(np.mean([calculate_psnr(o, g, crop_border=0) for o, g in zip(imgs, refs)])),
            'ssim': float(np.mean([calculate_ssim(o, g, crop_border=0) for o, g in zip(imgs, refs)])),
            'lpips': float(np.mean([lpips_fn(o, g) for o, g in zip(imgs, refs)])) if lpips_fn else None,
            'niqe': None,
        }

    def as_images(batch):
        return [to_uint8(batch[i:i + 1], net.image_range) for i in range(batch.shape[0])]

    results, images, extras, prior, niqe_reasons = {}, {}, {}, None, set()
    for (bottleneck, seed), opt_file in runs.items():
        net = build_net_from_options(opt_file)
        ckpt = osp.join(out, 'experiments', osp.splitext(osp.basename(opt_file))[0], 'models', 'net_g_latest.pth')
        net.load_state_dict(read_state_dict(ckpt, 'params_ema')[0], strict=True)
        net.eval()
        if prior is None:
            prior = net.build_prior(prior_path)
            targets = prior.prior_targets(gt)
            gt_imgs = as_images(gt)
            with torch.no_grad():
                prior_imgs = as_images(net.decode([t.feat for t in targets], net.encode(gt)[1]))
        with torch.no_grad():
            output = net.restore(lq)
        outs = as_images(output.image)
        row = image_metrics(outs, gt_imgs)
        row['psnr_to_prior'] = image_metrics(outs, prior_imgs)['psnr']
        row['latent_mse'] = float(np.mean([(o.feat - t.feat).square().mean().item()
                                           for o, t in zip(output.bottlenecks, targets)]))
        selecting = [i for i, b in enumerate(net.bottlenecks) if b.selects_codes]
        if selecting:
            row['index_accuracy'] = index_accuracy(torch.cat([output.bottlenecks[i].indices.reshape(-1)
                                                              for i in selecting]),
                                                   torch.cat([targets[i].indices.reshape(-1) for i in selecting]))
            row['codebook_usage'] = float(np.mean([codebook_usage(output.bottlenecks[i].indices,
                                                                  net.codebooks[i].shape[0]) for i in selecting]))
        try:
            with torch.no_grad():
                row['niqe'] = niqe(as_images(net.restore(lq_big).image))
        except ValueError as err:  # e.g. a learned position table fixed to the training size
            niqe_reasons.add(f'not for {bottleneck!r}: {err}')
        results[(bottleneck, seed)] = row
        if seed == min(s for b, s in runs if b == bottleneck):
            images[bottleneck] = outs
            if any(b.has_attention for b in net.bottlenecks):
                extras[bottleneck] = {'split': attention_split(net, output.latents), 'net': net,
                                      'latents': output.latents}
        progress.update(1)
    lq_imgs = as_images(lq)
    references = {'LQ input': dict(image_metrics(lq_imgs, gt_imgs), psnr_to_prior=image_metrics(lq_imgs,
                                                                                                 prior_imgs)['psnr']),
                  'prior on GT (upper bound)': image_metrics(prior_imgs, gt_imgs), 'GT': {}}
    references['LQ input']['niqe'] = niqe(as_images(lq_big))
    with torch.no_grad():
        big_targets = prior.prior_targets(gt_big)
        references['prior on GT (upper bound)']['niqe'] = niqe(
            as_images(net.decode([t.feat for t in big_targets], net.encode(gt_big)[1])))
    references['GT'] = {'psnr': None, 'ssim': None, 'lpips': None, 'niqe': niqe(as_images(gt_big))}
    reasons = {'lpips': lpips_reason, 'niqe': '; '.join(sorted(niqe_reasons))}
    return results, references, {'lq': lq_imgs, 'gt': gt_imgs, 'prior': prior_imgs, **images}, extras, reasons, lq


def summarize(results, seeds):
    """{bottleneck: {metric: (mean, std)}} over seeds."""
    table = {}
    for bottleneck in BOTTLENECKS:
        rows = [results[(bottleneck, s)] for s in seeds]
        table[bottleneck] = {}
        for key in rows[0]:
            values = [r[key] for r in rows if r.get(key) is not None]
            table[bottleneck][key] = (float(np.mean(values)), float(np.std(values))) if values else None
    return table


def markdown(table, references, reasons, split, seeds, timings):
    def cell(v, digits):
        return '–' if v is None else f'{v[0]:.{digits}f} ± {v[1]:.{digits}f}'

    lines = [f'# Quickstart: bottlenecks of a tiny CodeFormer ({len(seeds)} seed{"s" if len(seeds) > 1 else ""})', '',
             f"Train: {split['train_crops']} crops of {', '.join(split['train_photos'])}; evaluation: "
             f"{split['eval_crops']} held-out crops of {', '.join(split['eval_photos'])} ({split['crop_size']} px, "
             'CodeFormer blind degradation, fixed seed). Mean ± std over seeds.', '',
             '| bottleneck | PSNR ↑ | SSIM ↑ | LPIPS ↓ | NIQE ↓ | PSNR to prior(GT) ↑ | latent MSE ↓ | '
             'index accuracy ↑ | codebook usage |', '|---|---|---|---|---|---|---|---|---|']
    for name, row in table.items():
        lines.append(f"| {name} | {cell(row['psnr'], 2)} | {cell(row['ssim'], 4)} | {cell(row['lpips'], 4)} | "
                     f"{cell(row['niqe'], 2)} | {cell(row['psnr_to_prior'], 2)} | {cell(row['latent_mse'], 4)} | "
                     f"{cell(row.get('index_accuracy'), 4)} | {cell(row.get('codebook_usage'), 4)} |")
    def plain(v, digits):
        return '–' if v is None else f'{v:.{digits}f}'

    for label, row in references.items():
        lines.append(f"| *{label}* | {plain(row['psnr'], 2)} | {plain(row['ssim'], 4)} | {plain(row['lpips'], 4)} | "
                     f"{plain(row['niqe'], 2)} | {plain(row.get('psnr_to_prior'), 2)} | – | – | – |")
    ranking = sorted(table, key=lambda k: -table[k]['psnr'][0])
    lines += ['', f"Ranking by PSNR (as measured here): {' > '.join(ranking)}.", '']
    empty = [k for k, v in reasons.items() if v and any(r[k] is None for r in table.values())]
    lines += [f'- {k.upper()} missing: {reasons[k]}' for k in empty]
    lines += [f"- NIQE on {split['niqe_crops']} held-out {split['niqe_crop_size']} px crops (the networks run at any "
              'size but the index transformer), the other columns on the 64 px crops.']
    lines += ['- PSNR to prior(GT): against the prior\'s reconstruction of the GT, i.e. what decoding the ideal latent '
              'gives; latent MSE: ||z - z_hat||^2 of the decoder input against the prior\'s quantised GT latent. Both '
              'isolate the bottleneck from the quality of the tiny prior.',
              '- index accuracy / codebook usage: only for bottlenecks that select codes (nearest, index); accuracy is '
              "against the prior's nearest codes of the ground truth.",
              f"- time: data {timings['data']:.0f} s, prior {timings['prior']:.0f} s, restoration stages "
              f"{timings['restore']:.0f} s, evaluation {timings['eval']:.0f} s, total {timings['total']:.0f} s."]
    return '\n'.join(lines) + '\n'


def write_figures(out, images, extras, lq):
    """grid.png, attention_split.png (first codebook of every attention model), attention_maps.png (sinca)."""
    from basicsr_sinca.utils.analysis import image_grid, plot_attention_maps, plot_attention_split
    from basicsr_sinca.utils.file_io import atomic_imwrite
    columns = ['lq'] + list(BOTTLENECKS) + ['prior', 'gt']
    rows = [[images[c][i] for c in columns] for i in range(min(6, len(images['gt'])))]
    labels = ['LQ'] + list(BOTTLENECKS) + ['prior(GT)', 'GT']
    atomic_imwrite(image_grid(rows, labels, scale=2), osp.join(out, 'grid.png'))
    if extras:
        plot_attention_split({k: next(s for s in v['split'] if s is not None) for k, v in extras.items()},
                             osp.join(out, 'attention_split.png'))
    if 'sinca' in extras:
        net = extras['sinca']['net']
        i = next(i for i, b in enumerate(net.bottlenecks) if b.has_attention)
        latent = extras['sinca']['latents'][i][:1]
        h, w = latent.shape[-2:]
        query = (h // 2) * w + w // 2
        maps = net.bottlenecks[i].attention_maps(latent, net.codebooks[i], [query])
        low, high = net.image_range
        image = ((lq[0].permute(1, 2, 0).numpy() - low) / (high - low)).clip(0, 1)
        plot_attention_maps(image, maps, (h, w), query, osp.join(out, 'attention_maps.png'),
                            net.bottlenecks[i].attention_mode)


def main(argv=None):
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.fast else 3)))
    prior_iters = args.prior_iters if args.prior_iters is not None else (400 if args.fast else 1000)
    iters = args.iters if args.iters is not None else (200 if args.fast else 300)
    out = osp.abspath(args.out)
    options = repo_options()
    t0 = time.time()
    timings = {}
    print(f'quickstart: {len(seeds)} seed(s), prior {prior_iters} iterations, restoration {iters} iterations x '
          f'{len(BOTTLENECKS)} bottlenecks -> {out}', flush=True)
    split = make_data(out, args.train_crops, args.eval_crops, args.niqe_crops)
    timings['data'] = time.time() - t0

    total_runs = 1 + len(BOTTLENECKS) * len(seeds)
    with tqdm(total=total_runs, desc='trainings', unit='run') as bar:
        prior_opt = write_options(out, 'quickstart_prior', osp.join(options, 'prior.yml'), {
            'train': {'total_iter': prior_iters, 'net_d_start_iter': prior_iters * 3 // 4,
                      'scheduler': {'periods': [prior_iters]}}})
        timings['prior'] = run_training(out, prior_opt, threads=os.cpu_count() or 1)
        bar.update(1)
        prior_path = osp.join(out, 'experiments', 'quickstart_prior', 'models', 'net_g_latest.pth')

        runs = {}
        restore_base = osp.join(options, 'restore.yml')
        for seed in seeds:
            for name, bottleneck in BOTTLENECKS.items():
                runs[(name, seed)] = write_options(out, f'quickstart_{name}_s{seed}', restore_base, {
                    'manual_seed': seed,
                    'network_g': {'bottleneck': dict(bottleneck, _delete_=True), 'vqgan_path': prior_path},
                    'path': {'pretrain_network_hq': prior_path},
                    'train': {'total_iter': iters, 'scheduler': {'periods': [iters]}}})
        threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        start = time.time()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_training, out, opt, threads): key for key, opt in runs.items()}
            for future in futures:
                future.result()
                bar.update(1)
        timings['restore'] = time.time() - start

    start = time.time()
    with tqdm(total=len(runs), desc='evaluation', unit='model') as bar:
        results, references, images, extras, reasons, lq = evaluate(out, runs, prior_path, bar)
    table = summarize(results, seeds)
    write_figures(out, images, extras, lq)
    from basicsr_sinca.utils.analysis import plot_code_stats
    plot_code_stats({k: {'accuracy': v['index_accuracy'][0], 'usage': v['codebook_usage'][0]}
                     for k, v in table.items() if v.get('index_accuracy')}, osp.join(out, 'code_stats.png'))
    timings['eval'] = time.time() - start
    timings['total'] = time.time() - t0

    from basicsr_sinca.utils.file_io import atomic_open
    report = markdown(table, references, reasons, split, seeds, timings)
    with atomic_open(osp.join(out, 'results.md'), 'w') as f:
        f.write(report)
    payload = {'seeds': seeds, 'prior_iters': prior_iters, 'iters': iters, 'split': split, 'empty_columns': reasons,
               'references': references,
               'summary': {k: {m: (None if v is None else {'mean': v[0], 'std': v[1]}) for m, v in row.items()}
                           for k, row in table.items()},
               'runs': [{'bottleneck': b, 'seed': s, **r} for (b, s), r in results.items()], 'timings_s': timings}
    with atomic_open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(payload, f, indent=2)
    print('\n' + report)
    print(f'outputs in {out}: results.md, results.json, grid.png, attention_split.png, attention_maps.png, '
          'code_stats.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
