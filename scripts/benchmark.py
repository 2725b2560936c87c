#!/usr/bin/env python
"""Speed and memory of the SinCA bottleneck, measured side by side with the original in the same run.

(a) SinCA transformer (9 layers, d=256, 8 heads, 1024 codes, 16x16 latent) vs a CodeFormer-style index
    transformer (9 pre-norm self-attention layers, d=512, 8 heads, FFN 1024, learned positions, linear head
    to 1024 logits, top-1 lookup) at batch 1 and 8: inference and one training step (forward, loss,
    backward, Adam step).
(b) Token scaling N = 256 ... 16384 with 1024 codes: time and peak memory of one SinCA attention layer
    (d=256, 8 heads) against a naive reference that materialises the N x (N+M) attention map.
(c) Achieved GFLOP/s of the SinCA transformer forward next to a plain matmul with the same FLOP count.

Writes ``benchmark.json`` and ``benchmark.md`` (a markdown table) into ``--out`` and prints the table.
Targets (reported, not asserted): (a) inference ratio <= 1.0 at batch 8; (b) peak memory linear in N;
(c) >= 50% of the plain-matmul rate at batch 8.

``--costs`` instead measures (d), the cost of restoring one image with each baseline, original network vs its
SinCA twin (the packaged option files; random weights, which do not change the cost), through the restoration
command's own per-image code (``sinca-restore``: ``FaceRestorer`` on a 512 px aligned face, ``super_resolve`` on a
``--sr_side`` px LR crop): seconds per output megapixel and the peak memory added by the call (weights excluded;
CPU: Linux's VmHWM, CUDA: the allocator's peak). Writes ``costs.json`` and ``costs.md``.

Example::

    python scripts/benchmark.py --out benchmark_results          # full run (several minutes on 2 CPU cores)
    python scripts/benchmark.py --quick --out benchmark_quick     # seconds; format check, small models
    python scripts/benchmark.py --costs --out benchmark_costs     # (d) every baseline x {original, sinca}
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from os import path as osp

_MALLOC_ENV = 'MALLOC_MMAP_THRESHOLD_'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--out', default='benchmark_results', help='output folder (default: ./benchmark_results)')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    parser.add_argument('--quick', action='store_true', help='tiny sizes and one repeat: checks the output format')
    parser.add_argument('--repeats', type=int, default=None, help='timed repeats per measurement (default 5, quick 1)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--naive_limit_gb', type=float, default=4.0,
                        help='skip naive-attention points whose N x (N+M) maps need more memory (default 4 GB)')
    parser.add_argument('--costs', action='store_true',
                        help='measure (d) only: seconds per megapixel and peak memory of every baseline x {original, '
                        'sinca} (with --quick: the tiny CodeFormer and FeMaSR)')
    parser.add_argument('--sr_side', type=int, default=None, help='(d) LR side of the SR input (default 96, quick 24)')
    parser.add_argument('--_scaling_child', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_scaling_in_child(args):
    """Run part (b) in a child process whose glibc returns freed large buffers to the OS at once.

    Peak-RSS deltas then measure each step; the setting slows everything down, so (a) and (c) run here
    without it.
    """
    import subprocess
    env = dict(os.environ, **{_MALLOC_ENV: '65536'})
    cmd = [sys.executable, osp.abspath(__file__), '--_scaling_child', '--device', args.device,
           '--naive_limit_gb', str(args.naive_limit_gb)]
    cmd += ['--quick'] if args.quick else []
    cmd += ['--repeats', str(args.repeats)] if args.repeats else []
    cmd += ['--threads', str(args.threads)] if args.threads else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'token-scaling child failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


class PeakMemory:
    """Peak extra memory (MB) during a block: CUDA allocator stats, or Linux's VmHWM reset via clear_refs."""

    def __init__(self, device):
        self.device = device

    @staticmethod
    def _status(field):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        return float('nan')

    def __enter__(self):
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
        else:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
                self.start = self._status('VmRSS')
            except OSError:
                self.start = None
        return self

    def __exit__(self, *exc):
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self.start
        else:
            self.peak_mb = None if self.start is None else self._status('VmHWM') - self.start
        return False


def timed(fn, device, repeats, warmup=3):
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def register_sdpa_flops():
    """FlopCounterMode does not count the CPU flash-attention op; give it the usual 4·B·h·Nq·Nk·d formula."""
    import torch
    from torch.utils import flop_counter
    op = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if op is None or op.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _sdpa_cpu_flop(query_shape, key_shape, *args, out_shape=None, **kwargs):
        b, h, nq, d = query_shape
        return 4 * b * h * nq * key_shape[2] * d


def build_pair(cfg, device):
    import torch

    from basicsr_sinca.archs.index_transformer_arch import CodeFormerIndexTransformer
    from basicsr_sinca.archs.sinca_arch import SinCATransformer
    torch.manual_seed(0)
    sinca = SinCATransformer(dim=cfg['dim'], num_layers=cfg['layers'], num_heads=8).to(device)
    index = CodeFormerIndexTransformer(dim_embd=cfg['index_dim'], n_head=8, n_layers=cfg['layers'],
                                       codebook_size=cfg['codes'], latent_size=cfg['side']**2,
                                       latent_dim=cfg['dim']).to(device)
    codebook = torch.nn.Parameter(torch.randn(cfg['codes'], cfg['dim'], device=device), requires_grad=False)
    return sinca, index, codebook


def index_bottleneck(index, lq_feat, codebook):
    logits = index.logits(lq_feat)
    rows = codebook[logits.argmax(-1)]
    return rows.transpose(1, 2).reshape(lq_feat.shape), logits


def bench_models(cfg, device, repeats):
    import torch
    import torch.nn.functional as F
    sinca, index, codebook = build_pair(cfg, device)
    rows = []
    for batch in cfg['batches']:
        feat = torch.randn(batch, cfg['dim'], cfg['side'], cfg['side'], device=device)
        target = torch.randn_like(feat)
        target_idx = torch.randint(0, cfg['codes'], (batch, cfg['side']**2), device=device)
        row = {'batch': batch}
        sinca.eval()
        index.eval()
        with torch.no_grad():
            row['sinca_infer_ms'] = 1e3 * timed(lambda: sinca(feat, codebook), device, repeats)
            row['index_infer_ms'] = 1e3 * timed(lambda: index_bottleneck(index, feat, codebook), device, repeats)
        sinca.train()
        index.train()
        opt_s = torch.optim.Adam(sinca.parameters(), lr=1e-4)
        opt_i = torch.optim.Adam(index.parameters(), lr=1e-4)

        def step_sinca():
            opt_s.zero_grad(set_to_none=True)
            F.mse_loss(sinca(feat, codebook), target).backward()
            opt_s.step()

        def step_index():
            opt_i.zero_grad(set_to_none=True)
            _, logits = index_bottleneck(index, feat, codebook)
            F.cross_entropy(logits.reshape(-1, cfg['codes']), target_idx.reshape(-1)).backward()
            opt_i.step()

        row['sinca_train_ms'] = 1e3 * timed(step_sinca, device, repeats)
        row['index_train_ms'] = 1e3 * timed(step_index, device, repeats)
        row['infer_ratio'] = row['sinca_infer_ms'] / row['index_infer_ms']
        row['train_ratio'] = row['sinca_train_ms'] / row['index_train_ms']
        rows.append(row)
    params = {'sinca_params_M': sum(p.numel() for p in sinca.parameters()) / 1e6,
              'index_params_M': sum(p.numel() for p in index.parameters()) / 1e6}
    return rows, params, sinca, codebook


def naive_attention(attn, x, codebook):
    """Reference SinCA that materialises the full (B, heads, N, N+M) score and probability maps."""
    import torch
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    kv_in = torch.cat([x, codebook.expand(b, -1, -1)], dim=1)
    q = attn.to_q(x).reshape(b, n, h, d).transpose(1, 2)
    k = attn.to_k(kv_in).reshape(b, -1, h, d).transpose(1, 2)
    v = attn.to_v(kv_in).reshape(b, -1, h, d).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    return attn.to_out((probs @ v).transpose(1, 2).reshape(b, n, c))


def bench_scaling(cfg, device, repeats, naive_limit_gb):
    import torch

    from basicsr_sinca.archs.sinca_arch import SinCAAttention
    torch.manual_seed(0)
    attn = SinCAAttention(cfg['dim'], 8, 'sinca').to(device).eval()
    codebook = torch.randn(cfg['codes'], cfg['dim'], device=device)
    rows = []
    for n in cfg['tokens']:
        x = torch.randn(1, n, cfg['dim'], device=device)
        row = {'tokens': n}
        with torch.no_grad():
            attn(x, codebook)  # warm the codebook cache and kernels outside the measured block
            with PeakMemory(device) as mem:
                attn(x, codebook)
            row['sinca_peak_mb'] = mem.peak_mb
            row['sinca_ms'] = 1e3 * timed(lambda: attn(x, codebook), device, repeats, warmup=0)
            need_gb = 2 * 8 * n * (n + cfg['codes']) * 4 / 2**30
            if need_gb <= naive_limit_gb:
                with PeakMemory(device) as mem:
                    naive_attention(attn, x, codebook)
                row['naive_peak_mb'] = mem.peak_mb
                row['naive_ms'] = 1e3 * timed(lambda: naive_attention(attn, x, codebook), device, repeats, warmup=0)
            else:
                row['naive_skipped'] = f'needs ~{need_gb:.1f} GB for its attention maps (> --naive_limit_gb)'
        rows.append(row)
    return rows


def growth_exponent(rows, key):
    pts = [(r['tokens'], r[key]) for r in rows if r.get(key)]
    if len(pts) < 2 or pts[0][1] <= 0:
        return None
    (n0, m0), (n1, m1) = pts[0], pts[-1]
    return math.log(m1 / m0) / math.log(n1 / n0)


def bench_flops(sinca, codebook, cfg, device, repeats):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    register_sdpa_flops()
    batch = max(cfg['batches'])
    feat = torch.randn(batch, cfg['dim'], cfg['side'], cfg['side'], device=device)
    sinca.eval()
    with torch.no_grad():
        sinca(feat, codebook)
        with FlopCounterMode(display=False) as counter:
            sinca(feat, codebook)
        flops = counter.get_total_flops()
        sec = timed(lambda: sinca(feat, codebook), device, repeats)
        side = max(64, round((flops / 2)**(1 / 3)))
        a = torch.randn(side, side, device=device)
        bmat = torch.randn(side, side, device=device)
        mm_sec = timed(lambda: a @ bmat, device, repeats)
    rate = flops / sec / 1e9
    mm_rate = 2 * side**3 / mm_sec / 1e9
    return {'batch': batch, 'transformer_gflop': flops / 1e9, 'transformer_gflops_per_s': rate,
            'matmul_size': side, 'matmul_gflops_per_s': mm_rate, 'fraction_of_matmul': rate / mm_rate}


def fmt(v, digits=2):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def to_markdown(res):
    lines = [f"# SinCA benchmark ({res['device']}, {res['threads']} threads{', QUICK sizes' if res['quick'] else ''})",
             '', '## (a) SinCA transformer vs CodeFormer-style index transformer', '',
             f"SinCA {res['params']['sinca_params_M']:.2f} M params, index {res['params']['index_params_M']:.2f} M "
             f"params; {res['config']['layers']} layers, {res['config']['side']}x{res['config']['side']} latent, "
             f"{res['config']['codes']} codes.", '',
             '| batch | SinCA infer ms | index infer ms | ratio | SinCA train-step ms | index train-step ms | ratio |',
             '|---|---|---|---|---|---|---|']
    for r in res['a']:
        lines.append(f"| {r['batch']} | {fmt(r['sinca_infer_ms'])} | {fmt(r['index_infer_ms'])} | "
                     f"{fmt(r['infer_ratio'])} | {fmt(r['sinca_train_ms'])} | {fmt(r['index_train_ms'])} | "
                     f"{fmt(r['train_ratio'])} |")
    lines += ['', f"## (b) Token scaling (one SinCA attention layer, {res['config']['codes']} codes, batch 1)", '',
              '| N tokens | SinCA ms | SinCA peak MB | naive ms | naive peak MB |', '|---|---|---|---|---|']
    for r in res['b']:
        naive = r.get('naive_skipped')
        lines.append(f"| {r['tokens']} | {fmt(r['sinca_ms'])} | {fmt(r['sinca_peak_mb'], 1)} | "
                     f"{fmt(r.get('naive_ms')) if not naive else 'skipped'} | "
                     f"{fmt(r.get('naive_peak_mb'), 1) if not naive else naive} |")
    c = res['c']
    lines += ['', '## (c) Achieved rate', '',
              f"SinCA forward at batch {c['batch']}: {c['transformer_gflop']:.2f} GFLOP, "
              f"{c['transformer_gflops_per_s']:.1f} GFLOP/s; plain {c['matmul_size']}^3 matmul: "
              f"{c['matmul_gflops_per_s']:.1f} GFLOP/s; fraction {c['fraction_of_matmul']:.2f}.", '',
              '## Targets', '', '| target | measured | met |', '|---|---|---|']
    for t in res['targets']:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return '\n'.join(lines) + '\n'


# (d): baseline, original network, SinCA network (packaged option names)
COST_PAIRS = [
    ('CodeFormer', 'test/codeformer/test_codeformer_official', 'codeformer_sinca'),
    ('DAEFR', 'test/daefr/test_daefr_official', 'daefr_sinca'),
    ('RestoreFormer', 'test/restoreformer/test_restoreformer_official', 'restoreformer_sinca'),
    ('VQFR v2', 'test/vqfr/test_vqfr_v2_official', 'vqfr_sinca'),
    ('FeMaSR x4', 'test/femasr/test_femasr_official_x4', 'femasr_sinca'),
    ('AdaCode x4', 'test/adacode/test_adacode_official_x4', 'adacode_sinca'),
]
QUICK_COST_PAIRS = [
    ('CodeFormer (tiny)', 'train/codeformer/tiny/stage2_retrain', 'train/codeformer/tiny/stage2_sinca'),
    ('FeMaSR x4 (tiny)', 'train/femasr/tiny/x4_retrain', 'train/femasr/tiny/x4_sinca'),
]


def bench_costs(pairs, device, repeats, sr_side):
    """(d) One row per baseline x {original, sinca}: the per-image work of ``sinca-restore``, the peak memory of its
    first call and the median time of ``repeats`` calls after it."""
    import argparse as _argparse

    import cv2
    import torch

    from basicsr_sinca import restore
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import resolve_option_file
    from basicsr_sinca.utils.sample_data import load_photo
    decode_args = _argparse.Namespace(fidelity_weight=None, adain='auto', fidelity_ratio=None)
    rows = []
    for baseline, *opts in pairs:
        for variant, opt in zip(('original', 'sinca'), opts):
            torch.manual_seed(0)
            restorer = None
            net = build_net_from_options(resolve_option_file(opt)).to(device).eval()
            kind = restore.network_kind(net)
            if kind == 'face':
                size = net.img_size
                face = cv2.resize(load_photo('astronaut')[20:240, 140:360], (size, size), interpolation=cv2.INTER_AREA)
                restorer = restore.FaceRestorer(net, restore.decode_options(net, decode_args), device)

                def work():
                    return restorer(face)
                shape = (size, size)
            else:
                lr = load_photo('chelsea')[:sr_side, :sr_side]

                def work():
                    return restore.super_resolve(net, lr, device, max_size=10**6)
                shape = (sr_side * net.scale_factor, sr_side * net.scale_factor)
            with PeakMemory(device) as mem:  # the first call: memory as a fresh process needs it
                first = timed(work, device, 1, warmup=0)
            sec = timed(work, device, repeats, warmup=0)  # warm calls (one-time set-up excluded)
            megapixels = shape[0] * shape[1] / 1e6
            rows.append({'baseline': baseline, 'variant': variant, 'network': type(net).__name__, 'option': opt,
                         'kind': kind, 'params_M': sum(p.numel() for p in net.parameters()) / 1e6,
                         'output': f'{shape[1]}x{shape[0]}', 'seconds': sec, 'first_call_seconds': first,
                         'seconds_per_mp': sec / megapixels,
                         'peak_mb': mem.peak_mb})
            print(f"(d) {baseline} {variant}: {sec:.2f} s, {fmt(mem.peak_mb, 0)} MB", flush=True)
            net = restorer = None  # free the weights before the next network is built
    return rows


def costs_markdown(res):
    lines = [f"# Restoration cost per baseline ({res['device']}, {res['threads']} threads"
             f"{', QUICK sizes' if res['quick'] else ''}; random weights)", '',
             "Per image through `sinca-restore`'s code: an aligned face of the network's face size (face networks), a "
             f"{res['sr_side']}x{res['sr_side']} LR crop for SR networks; time of a warm call (median of "
             f"{res['repeats']}), also per megapixel of output; peak memory added by the first call (weights "
             'excluded).', '',
             '| baseline | variant | network | params (M) | output | s / image | s / MP | peak MB |',
             '|---|---|---|---|---|---|---|---|']
    for r in res['d']:
        lines.append(f"| {r['baseline']} | {r['variant']} | {r['network']} | {r['params_M']:.1f} | {r['output']} | "
                     f"{r['seconds']:.2f} | {r['seconds_per_mp']:.1f} | {fmt(r['peak_mb'], 0)} |")
    return '\n'.join(lines) + '\n'


def main_costs(args, device):
    import torch
    sr_side = args.sr_side or (24 if args.quick else 96)
    repeats = args.repeats or 1
    print(f'costs on {device} ({torch.get_num_threads()} threads), quick={args.quick}', flush=True)
    rows = bench_costs(QUICK_COST_PAIRS if args.quick else COST_PAIRS, device, repeats, sr_side)
    res = dict(run_header(device, args, repeats), sr_side=sr_side, d=rows)
    write_report(args.out, 'costs', res, costs_markdown(res))
    return 0


def run_header(device, args, repeats):
    """What every report records about the machine and the run."""
    import torch
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()
    return {'device': str(device), 'device_name': name, 'threads': torch.get_num_threads(),
            'torch': torch.__version__, 'quick': args.quick, 'repeats': repeats}


def write_report(out, stem, res, table):
    """``<stem>.json`` and ``<stem>.md`` into ``out`` (atomic writes); prints the table."""
    from basicsr_sinca.utils.file_io import atomic_open
    os.makedirs(out, exist_ok=True)
    with atomic_open(osp.join(out, f'{stem}.json'), 'w') as f:
        json.dump(res, f, indent=2)
    with atomic_open(osp.join(out, f'{stem}.md'), 'w') as f:
        f.write(table)
    print(table)


def main(argv=None):
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if args.device == 'auto' else args.device))
    if args.costs:
        return main_costs(args, device)
    repeats = args.repeats or (1 if args.quick else 5)
    if args.quick:
        cfg = {'dim': 64, 'index_dim': 128, 'layers': 2, 'codes': 128, 'side': 8, 'batches': [1, 8],
               'tokens': [64, 256]}
    else:
        cfg = {'dim': 256, 'index_dim': 512, 'layers': 9, 'codes': 1024, 'side': 16, 'batches': [1, 8],
               'tokens': [256, 1024, 4096, 16384]}

    if args._scaling_child:
        print(json.dumps(bench_scaling(cfg, device, repeats, args.naive_limit_gb)))
        return 0
    print(f'benchmark on {device} ({torch.get_num_threads()} threads), quick={args.quick}', flush=True)
    a_rows, params, sinca, codebook = bench_models(cfg, device, repeats)
    print('(a) done', flush=True)
    b_rows = run_scaling_in_child(args)
    print('(b) done', flush=True)
    c = bench_flops(sinca, codebook, cfg, device, repeats)
    print('(c) done', flush=True)

    batch8 = [r for r in a_rows if r['batch'] == max(cfg['batches'])][0]
    exponent = growth_exponent(b_rows, 'sinca_peak_mb')
    naive_exponent = growth_exponent(b_rows, 'naive_peak_mb')
    targets = [
        {'target': f"(a) inference <= 1.0x index transformer at batch {batch8['batch']}",
         'measured': f"{batch8['infer_ratio']:.2f}x", 'met': batch8['infer_ratio'] <= 1.0},
        {'target': '(b) SinCA peak memory linear in N (log-log slope <= 1.2)',
         'measured': f"slope {exponent:.2f} (naive {fmt(naive_exponent)})" if exponent is not None else 'n/a',
         'met': exponent is not None and exponent <= 1.2},
        {'target': '(c) >= 50% of the plain-matmul rate at batch 8',
         'measured': f"{100 * c['fraction_of_matmul']:.0f}%", 'met': c['fraction_of_matmul'] >= 0.5},
    ]
    res = dict(run_header(device, args, repeats), config=cfg, params=params, a=a_rows, b=b_rows, c=c, targets=targets)
    write_report(args.out, 'benchmark', res, to_markdown(res))
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
