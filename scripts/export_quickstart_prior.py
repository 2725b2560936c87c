#!/usr/bin/env python
"""Export a quickstart HQ prior as the package's shipped weights (maintainers).

Reads the EMA weights of a prior trained by ``options/quickstart/<task>_prior.yml`` (e.g. from
``python -m basicsr_sinca.quickstart --task sr --train_prior``), checks that they load strictly into that file's
network, writes them as ``{'params_ema': ...}`` (float32) to ``basicsr_sinca/weights/quickstart_<task>_prior.pth``
and records the file's SHA-256 in ``basicsr_sinca/weights/SHA256SUMS``. The quickstart refuses a shipped file whose
checksum differs.

Example:
    python -m basicsr_sinca.quickstart --task sr --train_prior --out qs_sr
    python scripts/export_quickstart_prior.py --task sr qs_sr/experiments/quickstart_sr_prior/models/net_g_latest.pth
"""
import argparse
import os
import sys
from os import path as osp


def main(argv=None):
    from basicsr_sinca.quickstart import TASKS, repo_options
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('checkpoint', help='net_g_*.pth of a prior training (its params_ema are exported)')
    parser.add_argument('--task', choices=sorted(TASKS), required=True, help='which quickstart prior it is')
    parser.add_argument('--weights_dir', default=None,
                        help='folder of the shipped weights and SHA256SUMS (default: the package\'s)')
    args = parser.parse_args(argv)

    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.file_io import atomic_open, atomic_torch_save
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.weights import WEIGHTS_DIR, read_checksums, sha256_of
    spec = TASKS[args.task]
    state_dict, _ = read_state_dict(args.checkpoint, 'params_ema', fallback_keys=())
    net = build_net_from_options(osp.join(repo_options(), spec['prior_options']))
    try:
        load_state_dict_report(net, state_dict, strict=True, source=args.checkpoint)
    except ValueError as err:
        print(f'options/quickstart/{spec["prior_options"]}: {err}', file=sys.stderr)
        return 1
    folder = args.weights_dir or WEIGHTS_DIR
    dest = osp.join(folder, spec['shipped_prior'])
    if osp.abspath(dest) == osp.abspath(args.checkpoint):
        print(f'{dest}: is the input; choose another --weights_dir', file=sys.stderr)
        return 1
    atomic_torch_save({'params_ema': {k: v.float().contiguous() for k, v in net.state_dict().items()}}, dest)
    sums = read_checksums(folder) if osp.isfile(osp.join(folder, 'SHA256SUMS')) else {}
    sums[spec['shipped_prior']] = sha256_of(dest)
    with atomic_open(osp.join(folder, 'SHA256SUMS'), 'w') as f:
        f.write(''.join(f'{digest}  {name}\n' for name, digest in sorted(sums.items())))
    print(f'wrote {dest} ({os.path.getsize(dest) / 1e6:.2f} MB, SHA-256 {sums[spec["shipped_prior"]]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
