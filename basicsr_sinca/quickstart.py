"""Offline quickstart: the paper's Table 3/4 comparison in miniature, on CPU, for two tasks.

``--task blind`` (default): a tiny CodeFormer on photo crops degraded with CodeFormer's blind (face) pipeline.
``--task sr``: a tiny FeMaSR, x2 super-resolution of crops degraded with BSRGAN's pipeline (mild blur, heavy noise).

1. Data: 48x48 crops (the GT for SR) of scikit-image's bundled photographs at their own resolution — training crops
   from five photos, held-out evaluation crops from another (the motorcycle of ``stereo_motorcycle``); the split is
   recorded.
2. The HQ prior: by default the one shipped with the package (trained beforehand by
   ``options/quickstart/<task>_prior.yml`` on the training photos only; SHA-256 checked on load);
   ``--train_prior`` trains it from scratch through BasicSR's pipeline instead.
3. The restoration stage once per bottleneck — ``nearest``, ``index``, ``sa``, ``ca``, ``sinca`` — and per seed,
   with identical budgets, data and seeds (``options/quickstart/<task>_restore.yml``), each through the entry point.
4. Evaluation on the held-out crops, degraded as in training at a fixed seed: PSNR, SSIM (RGB for blind; Y channel
   with a border crop of the scale for SR, as BasicSR), LPIPS (with local trunk weights), NIQE on larger held-out
   crops, PSNR against the prior's reconstruction of the GT, latent error, code-index accuracy and codebook usage;
   mean ± std over seeds, and which orderings are beyond seed noise.

Writes ``results.md`` (the table), ``results.json``, ``grid.png`` (LQ / each bottleneck / prior(GT) / GT),
``attention_split.png``, ``attention_maps.png``, ``code_stats.png`` and the held-out images of every row
(``images/<row>/``, first seed) into the output folder, plus the data, generated option files, logs and
experiments. Deterministic for given seeds.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from os import path as osp

import numpy as np

TRANSFORMER = {'num_layers': 2, 'num_heads': 4, 'ffn_expansion': 2.66}
BOTTLENECKS = {
    'nearest': {'type': 'nearest'},
    'index': {'type': 'index', 'dim_embd': 64, 'n_head': 4, 'n_layers': 2},
    'sa': dict(type='sa', **TRANSFORMER),
    'ca': dict(type='ca', **TRANSFORMER),
    'sinca': dict(type='sinca', **TRANSFORMER),
}
TASKS = {
    'blind': {
        'title': 'blind restoration with a tiny CodeFormer (CodeFormer\'s blind face degradation on photo crops)',
        'prior_options': 'blind_prior.yml', 'restore_options': 'blind_restore.yml',
        'shipped_prior': 'quickstart_blind_prior.pth', 'crop': 48, 'scale': 1, 'crop_border': 0, 'y_channel': False,
        'lq_label': 'LQ input', 'iters': 400, 'fast_iters': 200,
        # where the restoration file takes the prior: CodeFormer initialises encoder, codebook and generator from
        # the VQGAN (vqgan_path) and takes its targets from it (pretrain_network_hq)
        'prior_keys': (('network_g', 'vqgan_path'), ('path', 'pretrain_network_hq')),
    },
    'sr': {
        'title': 'x2 super-resolution with a tiny FeMaSR (BSRGAN degradation: mild blur, heavy noise and JPEG)',
        'prior_options': 'sr_prior.yml', 'restore_options': 'sr_restore.yml',
        'shipped_prior': 'quickstart_sr_prior.pth', 'crop': 48, 'scale': 2, 'crop_border': 2, 'y_channel': True,
        'lq_label': 'bicubic x2', 'iters': 400, 'fast_iters': 200,
        'prior_keys': (('path', 'pretrain_network_hq'), ),   # FeMaSRLQModel initialises from it, non-strictly
    },
}
TRAIN_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera')
EVAL_PHOTO = 'stereo_motorcycle (left view)'
NIQE_SIZE = 192  # BasicSR's NIQE needs about 192 px; measured on larger held-out crops
EVAL_SEED = 2024
PRIOR_ROW = 'prior on GT (upper bound)'


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
        epilog='Default: 3 seeds; --fast: 1 seed, a shorter restoration schedule (a smoke run). '
               'The output folder defaults to ./quickstart_<task>.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', choices=sorted(TASKS), default='blind',
                        help='blind: tiny CodeFormer, blind restoration (default); sr: tiny FeMaSR, x2 SR')
    parser.add_argument('--out', default=None, help='output folder (default: ./quickstart_<task>)')
    parser.add_argument('--fast', action='store_true', help='1 seed and a shorter restoration schedule')
    parser.add_argument('--seeds', type=positive_int, default=None, help='number of seeds (default 3, --fast 1)')
    parser.add_argument('--iters', type=positive_int, default=None,
                        help='restoration iterations per bottleneck (default: ' + '; '.join(
                            f"{t} {s['iters']}, --fast {s['fast_iters']}" for t, s in TASKS.items()) + ')')
    parser.add_argument('--bottlenecks', nargs='+', choices=list(BOTTLENECKS), default=list(BOTTLENECKS),
                        help='bottlenecks to compare (default: all five)')
    parser.add_argument('--train_prior', action='store_true',
                        help='train the HQ prior from scratch (options/quickstart/<task>_prior.yml) instead of '
                        'using the one shipped with the package')
    parser.add_argument('--prior_iters', type=positive_int, default=None,
                        help='with --train_prior: stage-1 iterations (default: the option file\'s total_iter)')
    parser.add_argument('--jobs', type=positive_int, default=2,
                        help='restoration trainings run in parallel (default 2)')
    parser.add_argument('--train_crops', type=positive_int, default=60,
                        help='training crops per photo (default 60)')
    parser.add_argument('--eval_crops', type=positive_int, default=16,
                        help='held-out evaluation crops (default 16)')
    parser.add_argument('--niqe_crops', type=int, default=4,
                        help=f'held-out {NIQE_SIZE} px crops for NIQE (default 4)')
    return parser


def repo_options():
    """The quickstart's option files (packaged with the wheel, or the source checkout's ``options/quickstart``)."""
    from basicsr_sinca.utils.options import options_dir
    return osp.join(options_dir(), 'quickstart')


def make_data(out, crop_size, train_crops, eval_crops, niqe_crops):
    """``crop_size`` px crops of the training photos and of the held-out photo; returns the split record."""
    import cv2
    import skimage.data

    from basicsr_sinca.utils.sample_data import load_photo, random_crops
    rng = np.random.default_rng(0)
    root = osp.join(out, 'datasets', 'quickstart')
    train_dir, eval_dir, niqe_dir = (osp.join(root, 'train_gt'), osp.join(root, 'eval_gt'),
                                     osp.join(root, f'eval_gt_{NIQE_SIZE}'))
    for folder in (train_dir, eval_dir, niqe_dir):
        os.makedirs(folder, exist_ok=True)
    for name in TRAIN_PHOTOS:
        for i, crop in enumerate(random_crops(load_photo(name), crop_size, train_crops, rng)):
            cv2.imwrite(osp.join(train_dir, f'{name}_{i:02d}.png'), crop)
    moto = np.ascontiguousarray(skimage.data.stereo_motorcycle()[0][..., ::-1])
    for i, crop in enumerate(random_crops(moto, crop_size, eval_crops, rng)):
        cv2.imwrite(osp.join(eval_dir, f'motorcycle_{i:02d}.png'), crop)
    for i, crop in enumerate(random_crops(moto, NIQE_SIZE, niqe_crops, rng)):
        cv2.imwrite(osp.join(niqe_dir, f'motorcycle_{i:02d}.png'), crop)
    split = {'train_photos': list(TRAIN_PHOTOS), 'train_crops': len(TRAIN_PHOTOS) * train_crops,
             'eval_photos': [EVAL_PHOTO], 'eval_crops': eval_crops, 'crop_size': crop_size,
             'niqe_crops': niqe_crops, 'niqe_crop_size': NIQE_SIZE,
             'source': 'scikit-image bundled images at their own resolution, random crops (seed 0)'}
    with open(osp.join(root, 'split.json'), 'w') as f:
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


ITER_PATTERN = re.compile(r'\biter:\s*([\d,]+)')  # not total_iter: of the printed options


def run_training(out, opt_file, threads, on_progress=None):
    """One training through the package's entry point (a separate process, as a user would run it).

    Its output goes to ``logs/<name>.log``; ``on_progress(iterations done since the last call)`` follows the
    iteration numbers it logs.
    """
    name = osp.splitext(osp.basename(opt_file))[0]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = osp.dirname(osp.dirname(osp.abspath(__file__))) + os.pathsep + env.get('PYTHONPATH', '')
    os.makedirs(osp.join(out, 'logs'), exist_ok=True)
    log = osp.join(out, 'logs', f'{name}.log')
    start, done = time.time(), 0
    with open(log, 'w') as f:
        proc = subprocess.Popen([sys.executable, '-m', 'basicsr_sinca.train', '-opt', opt_file], cwd=out, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            f.flush()  # the log can be followed while the training runs
            match = ITER_PATTERN.search(line)
            if match and on_progress is not None:
                current = int(match.group(1).replace(',', ''))
                if current > done:
                    on_progress(current - done)
                    done = current
        proc.wait()
    if proc.returncode != 0:
        with open(log) as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(f'training {name} failed (exit {proc.returncode}); log {log}:\n{tail}')
    return time.time() - start


def evaluation_set(out, task, size=None):
    """The held-out crops (``size`` px, default the task's crop) degraded as the task's training data (its ranges),
    at a fixed seed."""
    size = size or TASKS[task]['crop']
    import basicsr_sinca  # noqa: F401  (registers the datasets)
    from basicsr.utils.registry import DATASET_REGISTRY

    from basicsr_sinca.utils.options import load_options
    opt = dict(load_options(osp.join(repo_options(), TASKS[task]['restore_options']))['datasets']['train'])
    folder = osp.join(out, 'datasets', 'quickstart', 'eval_gt' + ('' if size == TASKS[task]['crop'] else f'_{size}'))
    opt.update(name='photos_eval', phase='val', dataroot_gt=folder, seed=EVAL_SEED, gt_size=size)
    opt.update({key: False for key in ('use_hflip', 'use_rot', 'use_resize_crop') if key in opt})
    if 'in_size' in opt:
        opt['in_size'] = size
    if TASKS[task]['scale'] > 1:
        opt['scale'] = TASKS[task]['scale']
    return DATASET_REGISTRY.get(opt['type'])(opt)


def stack(dataset):
    import torch
    items = [dataset[i] for i in range(len(dataset))]
    names = [osp.splitext(osp.basename(it['gt_path']))[0] for it in items]
    return torch.stack([it['lq'] for it in items]), torch.stack([it['gt'] for it in items]), names


def lpips_status():
    """(metric function or None, reason when None)."""
    from basicsr_sinca.metrics.lpips_metric import calculate_lpips
    try:
        calculate_lpips(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), net='alex')
        return calculate_lpips, ''
    except FileNotFoundError:
        return None, 'no local AlexNet trunk weights (alexnet-owt-7be5be79.pth, see README)'


def fidelity(imgs, refs, task, lpips_fn=None):
    """Mean PSNR / SSIM (/ LPIPS) of HWC BGR uint8 ``imgs`` against ``refs``: BasicSR's metrics, RGB without border
    crop for ``blind``, Y channel with a border crop of the scale for ``sr``."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    kw = {'crop_border': TASKS[task]['crop_border'], 'test_y_channel': TASKS[task]['y_channel']}
    return {
        'psnr': float(np.mean([calculate_psnr(o, g, **kw) for o, g in zip(imgs, refs)])),
        'ssim': float(np.mean([calculate_ssim(o, g, **kw) for o, g in zip(imgs, refs)])),
        'lpips': float(np.mean([lpips_fn(o, g) for o, g in zip(imgs, refs)])) if lpips_fn else None,
        'niqe': None,
    }


def lq_reference(lq_imgs, task, size):
    """The LQ row's images: the input itself (blind) or its bicubic upsampling to the GT size (SR)."""
    import cv2
    if TASKS[task]['scale'] == 1:
        return lq_imgs
    return [cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC) for img in lq_imgs]


def write_images(out, label, imgs, names):
    """The held-out images of one table row as ``images/<label>/<name>.png``; returns the folder (relative)."""
    from basicsr_sinca.utils.file_io import atomic_imwrite
    folder = osp.join('images', label.replace(' ', '_'))
    for img, name in zip(imgs, names):
        atomic_imwrite(img, osp.join(out, folder, f'{name}.png'))
    return folder


def evaluate(out, task, runs, prior_path, progress):
    """Metrics of every run on the held-out set, plus the images and attention data the report needs.

    Works on any network of the restorer contract. Besides PSNR/SSIM/LPIPS against the GT, two columns isolate
    the bottleneck from the prior: PSNR against the prior's own reconstruction of the GT (what a perfect bottleneck
    would decode) and the latent error ||z - z_hat||^2 against the prior's quantised GT latent (mean over codebooks).
    Index accuracy and codebook usage are given for bottlenecks that select codes (pooled over codebooks).
    """
    import torch
    from basicsr.metrics import calculate_niqe

    from basicsr_sinca.utils.analysis import attention_split, codebook_usage, index_accuracy, to_uint8
    from basicsr_sinca.utils.checkpoint import read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    lq, gt, names = stack(evaluation_set(out, task))
    lq_big, gt_big, _ = stack(evaluation_set(out, task, NIQE_SIZE))
    lpips_fn, lpips_reason = lpips_status()

    def niqe(imgs):
        return float(np.mean([calculate_niqe(img, crop_border=0) for img in imgs]))

    def as_images(batch, image_range):
        return [to_uint8(batch[i:i + 1], image_range) for i in range(batch.shape[0])]

    results, images, extras, niqe_reasons = {}, {}, {}, set()
    prior = net = None
    for (bottleneck, seed), opt_file in runs.items():
        net = build_net_from_options(opt_file)
        ckpt = osp.join(out, 'experiments', osp.splitext(osp.basename(opt_file))[0], 'models', 'net_g_latest.pth')
        net.load_state_dict(read_state_dict(ckpt, 'params_ema')[0], strict=True)
        net.eval()
        if prior is None:
            prior = net.build_prior(prior_path)
            targets = prior.prior_targets(gt)
            gt_imgs = as_images(gt, net.image_range)
            with torch.no_grad():
                prior_imgs = as_images(prior.autoencoder_terms(prior(gt))[0], net.image_range)
        with torch.no_grad():
            output = net.restore(lq)
        outs = as_images(output.image, net.image_range)
        row = fidelity(outs, gt_imgs, task, lpips_fn)
        row['psnr_to_prior'] = fidelity(outs, prior_imgs, task)['psnr']
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
                row['niqe'] = niqe(as_images(net.restore(lq_big).image, net.image_range))
        except ValueError as err:  # e.g. a learned position table fixed to the training size
            niqe_reasons.add(f'not for {bottleneck!r}: {err}')
        if seed == min(s for b, s in runs if b == bottleneck):
            images[bottleneck] = outs
            row['images'] = write_images(out, bottleneck, outs, names)
            if any(b.has_attention for b in net.bottlenecks):
                extras[bottleneck] = {'split': attention_split(net, output.latents), 'net': net,
                                      'latents': output.latents}
        results[(bottleneck, seed)] = row
        progress.update(1)

    lq_label = TASKS[task]['lq_label']
    lq_imgs = as_images(lq, net.image_range)
    lq_row_imgs = lq_reference(lq_imgs, task, TASKS[task]['crop'])
    references = {
        lq_label: dict(fidelity(lq_row_imgs, gt_imgs, task, lpips_fn),
                       psnr_to_prior=fidelity(lq_row_imgs, prior_imgs, task)['psnr'],
                       images=write_images(out, lq_label, lq_row_imgs, names)),
        PRIOR_ROW: dict(fidelity(prior_imgs, gt_imgs, task, lpips_fn),
                        images=write_images(out, 'prior', prior_imgs, names)),
        'GT': {'psnr': None, 'ssim': None, 'lpips': None, 'images': write_images(out, 'gt', gt_imgs, names)},
    }
    if TASKS[task]['scale'] > 1:
        write_images(out, 'lq', lq_imgs, names)
    references[lq_label]['niqe'] = niqe(lq_reference(as_images(lq_big, net.image_range), task, NIQE_SIZE))
    with torch.no_grad():
        references[PRIOR_ROW]['niqe'] = niqe(as_images(prior.autoencoder_terms(prior(gt_big))[0], net.image_range))
    references['GT']['niqe'] = niqe(as_images(gt_big, net.image_range))
    reasons = {'lpips': lpips_reason, 'niqe': '; '.join(sorted(niqe_reasons))}
    images.update({'lq': lq_row_imgs, 'gt': gt_imgs, 'prior': prior_imgs})
    return results, references, images, extras, reasons, lq


def summarize(results, bottlenecks, seeds):
    """{bottleneck: {metric: (mean, std)}} over seeds (population std)."""
    table = {}
    for bottleneck in bottlenecks:
        rows = [results[(bottleneck, s)] for s in seeds]
        table[bottleneck] = {}
        for key in rows[0]:
            if key == 'images':
                continue
            values = [r[key] for r in rows if r.get(key) is not None]
            table[bottleneck][key] = (float(np.mean(values)), float(np.std(values))) if values else None
    return table


def separations(table, metric='psnr', factor=2.0):
    """Each pair of bottlenecks ordered by ``metric``: whether the difference of means exceeds ``factor`` times the
    pooled std over seeds, sqrt((s_a^2 + s_b^2) / 2). Returns [(better, worse, difference, pooled, beyond)]."""
    names = sorted(table, key=lambda k: -table[k][metric][0])
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (ma, sa), (mb, sb) = table[a][metric], table[b][metric]
            pooled = float(np.sqrt((sa**2 + sb**2) / 2))
            pairs.append((a, b, ma - mb, pooled, (ma - mb) > factor * pooled))
    return pairs


def markdown(task, table, references, reasons, split, seeds, timings, prior_info):
    def cell(v, digits):
        return '–' if v is None else f'{v[0]:.{digits}f} ± {v[1]:.{digits}f}'

    def plain(v, digits):
        return '–' if v is None else f'{v:.{digits}f}'

    spec = TASKS[task]
    metric_note = ('Y-channel PSNR/SSIM, border of {} px cropped'.format(spec['crop_border']) if spec['y_channel']
                   else 'RGB PSNR/SSIM')
    lines = [f"# Quickstart ({task}): {spec['title']} — {len(seeds)} seed{'s' if len(seeds) > 1 else ''}", '',
             f"Train: {split['train_crops']} crops of {', '.join(split['train_photos'])}; evaluation: "
             f"{split['eval_crops']} held-out crops of {', '.join(split['eval_photos'])} ({split['crop_size']} px, "
             f'degraded as in training at a fixed seed; {metric_note}). Mean ± std over seeds.', '',
             '| bottleneck | PSNR ↑ | SSIM ↑ | LPIPS ↓ | NIQE ↓ | PSNR to prior(GT) ↑ | latent MSE ↓ | '
             'index accuracy ↑ | codebook usage |', '|---|---|---|---|---|---|---|---|---|']
    for name, row in table.items():
        lines.append(f"| {name} | {cell(row['psnr'], 2)} | {cell(row['ssim'], 4)} | {cell(row['lpips'], 4)} | "
                     f"{cell(row['niqe'], 2)} | {cell(row['psnr_to_prior'], 2)} | {cell(row['latent_mse'], 4)} | "
                     f"{cell(row.get('index_accuracy'), 4)} | {cell(row.get('codebook_usage'), 4)} |")
    for label, row in references.items():
        lines.append(f"| *{label}* | {plain(row['psnr'], 2)} | {plain(row['ssim'], 4)} | {plain(row['lpips'], 4)} | "
                     f"{plain(row['niqe'], 2)} | {plain(row.get('psnr_to_prior'), 2)} | – | – | – |")
    ranking = sorted(table, key=lambda k: -table[k]['psnr'][0])
    lq_psnr = references[spec['lq_label']]['psnr']
    beating = [k for k in ranking if table[k]['psnr'][0] > lq_psnr]
    lines += ['', f"Ranking by PSNR (as measured here): {' > '.join(ranking)}.",
              f"Above the {spec['lq_label']} row ({lq_psnr:.2f} dB): {', '.join(beating) if beating else 'none'}."]
    if len(seeds) > 1:
        pairs = separations(table)
        beyond = [f'{a} > {b} (+{d:.2f} dB)' for a, b, d, _, ok in pairs if ok]
        within = [f'{a} vs {b} ({d:+.2f} dB, pooled std {s:.2f})' for a, b, d, s, ok in pairs if not ok]
        lines += [f"Beyond seed noise (PSNR difference > 2 × pooled std): {'; '.join(beyond) or 'none'}.",
                  f"Within seed noise: {'; '.join(within) or 'none'}."]
    else:
        lines += ['One seed: no statement about seed noise (use --seeds 3 or more).']
    lines += ['', f"- prior: {prior_info['source']}; it reconstructs the held-out GT at "
                  f"{references[PRIOR_ROW]['psnr']:.2f} dB (row *{PRIOR_ROW}*)."]
    empty = [k for k, v in reasons.items() if v and any(r[k] is None for r in table.values())]
    lines += [f'- {k.upper()} missing: {reasons[k]}' for k in empty]
    lines += [f"- NIQE on {split['niqe_crops']} held-out {split['niqe_crop_size']} px crops (the networks run at any "
              f"size but the index transformer), the other columns on the {split['crop_size']} px crops.",
              "- PSNR to prior(GT): against the prior's reconstruction of the GT, what a perfect bottleneck would "
              "decode (a ceiling for CodeFormer's decoder; FeMaSR's skip connections from the LQ encoder can pass it); "
              "latent MSE: ||z - z_hat||^2 of the decoder input against the prior's quantised GT latent.",
              '- index accuracy / codebook usage: only for bottlenecks that select codes (nearest, index); accuracy is '
              "against the prior's nearest codes of the ground truth.",
              f"- time: data {timings['data']:.0f} s, prior {timings['prior']:.0f} s, restoration stages "
              f"{timings['restore']:.0f} s, evaluation {timings['eval']:.0f} s, total {timings['total']:.0f} s."]
    return '\n'.join(lines) + '\n'


def write_figures(out, task, bottlenecks, images, extras, lq):
    """grid.png, attention_split.png (first codebook of every attention model), attention_maps.png (sinca)."""
    from basicsr_sinca.utils.analysis import image_grid, plot_attention_maps, plot_attention_split
    from basicsr_sinca.utils.file_io import atomic_imwrite
    columns = ['lq'] + list(bottlenecks) + ['prior', 'gt']
    rows = [[images[c][i] for c in columns] for i in range(min(6, len(images['gt'])))]
    labels = [TASKS[task]['lq_label'].split()[0]] + list(bottlenecks) + ['prior(GT)', 'GT']
    atomic_imwrite(image_grid(rows, labels, scale=3), osp.join(out, 'grid.png'))
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


class StageBar:
    """A tqdm bar over the iterations of several trainings running in threads."""

    def __init__(self, total, desc):
        from tqdm import tqdm
        self.bar, self.lock = tqdm(total=total, desc=desc, unit='it'), threading.Lock()

    def __call__(self, n):
        with self.lock:
            self.bar.update(n)

    def close(self):
        self.bar.close()


def prepare_prior(out, task, args, options):
    """Path of the HQ prior and how it was obtained (``--train_prior`` trains it here, otherwise the shipped
    file, checksum-verified)."""
    from basicsr_sinca.weights import sha256_of, shipped_weights
    spec = TASKS[task]
    if not args.train_prior:
        path = shipped_weights(spec['shipped_prior'])
        return path, {'source': f"shipped {spec['shipped_prior']} (SHA-256 {sha256_of(path)[:12]}…, trained by "
                                f"options/quickstart/{spec['prior_options']})", 'trained_here': False}
    from basicsr_sinca.utils.options import load_options
    prior_file = osp.join(options, spec['prior_options'])
    iters = args.prior_iters or load_options(prior_file)['train']['total_iter']
    name = f'quickstart_{task}_prior'
    opt_file = write_options(out, name, prior_file, {
        'train': {'total_iter': iters, 'scheduler': {'periods': [iters]}},
        'logger': {'print_freq': max(1, iters // 50)}})
    bar = StageBar(iters, 'prior (stage 1)')
    run_training(out, opt_file, os.cpu_count() or 1, bar)
    bar.close()
    path = osp.join(out, 'experiments', name, 'models', 'net_g_latest.pth')
    return path, {'source': f'trained here for {iters} iterations by options/quickstart/{spec["prior_options"]}',
                  'trained_here': True}


def best_model_command(out, task, table, runs, seeds):
    """The command that restores a user's own images with the best bottleneck (by mean PSNR), first seed: the
    package's restoration CLI (SR at any size, tiled when large; the blind model on images resized to its input
    size, as aligned faces are)."""
    best = max(table, key=lambda k: table[k]['psnr'][0])
    opt_file = runs[(best, seeds[0])]
    ckpt = osp.join(out, 'experiments', osp.splitext(osp.basename(opt_file))[0], 'models', 'net_g_latest.pth')
    extra = '' if TASKS[task]['scale'] > 1 else ' --has_aligned'
    return best, (f'python -m basicsr_sinca.restore --opt {opt_file} --model_path {ckpt} -i YOUR_IMAGES '
                  f'-o {osp.join(out, "restored_yours")}{extra}')


def main(argv=None):
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    task, spec = args.task, TASKS[args.task]
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.fast else 3)))
    iters = args.iters if args.iters is not None else (spec['fast_iters'] if args.fast else spec['iters'])
    bottlenecks = [b for b in BOTTLENECKS if b in args.bottlenecks]
    out = osp.abspath(args.out or f'quickstart_{task}')
    options = repo_options()
    t0 = time.time()
    timings = {}
    print(f"quickstart ({task}): {spec['title']}; {len(seeds)} seed(s), restoration {iters} iterations x "
          f"{len(bottlenecks)} bottlenecks -> {out}", flush=True)
    split = make_data(out, spec['crop'], args.train_crops, args.eval_crops, args.niqe_crops)
    timings['data'] = time.time() - t0

    start = time.time()
    prior_path, prior_info = prepare_prior(out, task, args, options)
    timings['prior'] = time.time() - start

    runs = {}
    for seed in seeds:
        for name in bottlenecks:
            overrides = {'manual_seed': seed, 'network_g': {'bottleneck': dict(BOTTLENECKS[name], _delete_=True)},
                         'path': {}, 'train': {'total_iter': iters, 'scheduler': {'periods': [iters]}},
                         'logger': {'print_freq': max(1, iters // 20)}}
            for section, key in spec['prior_keys']:
                overrides[section][key] = prior_path
            runs[(name, seed)] = write_options(out, f'quickstart_{task}_{name}_s{seed}',
                                               osp.join(options, spec['restore_options']), overrides)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    start = time.time()
    bar = StageBar(iters * len(runs), f'restoration ({len(runs)} trainings)')
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_training, out, opt, threads, bar) for opt in runs.values()]
        for future in futures:
            future.result()
    bar.close()
    timings['restore'] = time.time() - start

    start = time.time()
    with tqdm(total=len(runs), desc='evaluation', unit='model') as ebar:
        results, references, images, extras, reasons, lq = evaluate(out, task, runs, prior_path, ebar)
    table = summarize(results, bottlenecks, seeds)
    write_figures(out, task, bottlenecks, images, extras, lq)
    from basicsr_sinca.utils.analysis import plot_code_stats
    plot_code_stats({k: {'accuracy': v['index_accuracy'][0], 'usage': v['codebook_usage'][0]}
                     for k, v in table.items() if v.get('index_accuracy')}, osp.join(out, 'code_stats.png'))
    timings['eval'] = time.time() - start
    timings['total'] = time.time() - t0

    from basicsr_sinca.utils.file_io import atomic_open
    report = markdown(task, table, references, reasons, split, seeds, timings, prior_info)
    best, command = best_model_command(out, task, table, runs, seeds)
    payload = {'task': task, 'seeds': seeds, 'iters': iters, 'bottlenecks': bottlenecks, 'split': split,
               'prior': dict(prior_info, path=prior_path), 'empty_columns': reasons, 'lq_row': spec['lq_label'],
               'metric': {'crop_border': spec['crop_border'], 'y_channel': spec['y_channel']},
               'references': references,
               'summary': {k: {m: (None if v is None else {'mean': v[0], 'std': v[1]}) for m, v in row.items()}
                           for k, row in table.items()},
               'separations': [{'better': a, 'worse': b, 'difference': d, 'pooled_std': s, 'beyond_noise': bool(ok)}
                               for a, b, d, s, ok in (separations(table) if len(seeds) > 1 else [])],
               'runs': [{'bottleneck': b, 'seed': s, **r} for (b, s), r in results.items()], 'timings_s': timings,
               'best': {'bottleneck': best, 'command': command}}
    with atomic_open(osp.join(out, 'results.md'), 'w') as f:
        f.write(report)
    with atomic_open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(payload, f, indent=2)
    print('\n' + report)
    print(f'outputs in {out}: results.md, results.json, grid.png, attention_split.png, attention_maps.png, '
          'code_stats.png, images/')
    print(f'restore your own images with the best model here ({best}):\n  {command}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
