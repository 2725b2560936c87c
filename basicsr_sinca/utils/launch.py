"""Shared command line of ``basicsr_sinca/train.py`` and ``basicsr_sinca/test.py``.

Resolves the option file (a path, or the bare name of a packaged file such as ``codeformer_sinca``; ``_base_``,
``--force_yml``), validates it, imports the plugins it names and runs the package's train or test pipeline
(:mod:`basicsr_sinca.utils.pipeline`: BasicSR's loop with its CPU and resume fixes, nothing of BasicSR
replaced) with the current directory as root: experiments go to ``./experiments``, results to ``./results``.
The resolved options are copied into the experiment (results) folder as a flat file BasicSR's own entry can
read.
"""
import argparse
import os
import pickle
import sys
import traceback

__all__ = ['build_parser', 'main']

# errors that describe bad input rather than a bug: shown as one line unless --debug / SINCA_TRACEBACK=1
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotImplementedError, pickle.UnpicklingError)


def build_parser(is_train):
    what = 'Train' if is_train else 'Test'
    parser = argparse.ArgumentParser(
        prog=f'python -m basicsr_sinca.{"train" if is_train else "test"}',
        description=f'{what} a basicsr_sinca / BasicSR model described by a YAML option file. Option files may '
        'inherit with `_base_: [a.yml, ...]`; the resolved file is what BasicSR reads and what is copied into '
        f'the {"experiment" if is_train else "results"} folder. Outputs go under the current directory '
        f'(./{"experiments" if is_train else "results"}/<name>) unless '
        f'path.{"experiments" if is_train else "results"}_root is set.')
    parser.add_argument('-opt', required=True, metavar='YML',
                        help='option YAML file: a path, or the name of a file shipped with the package '
                        '(e.g. codeformer_sinca, train/codeformer/tiny/stage2_sinca)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (single process), pytorch (torchrun; gloo on CPU, nccl on GPU), slurm')
    if is_train:
        parser.add_argument('--auto_resume', action='store_true',
                            help='resume from the newest readable training state of this experiment, if any')
    parser.add_argument('--debug', action='store_true',
                        help="BasicSR debug mode (name gets 'debug_', frequent logs/saves); also shows full tracebacks")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help='set by old launchers; ignored')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override options, e.g. train:ema_decay=0.999 datasets:train:batch_size_per_gpu=4')
    parser.add_argument('--print_opt', action='store_true',
                        help='print the resolved options (after _base_ and --force_yml) as YAML and exit')
    return parser


def _fail(message):
    print(f'basicsr_sinca: error: {message}', file=sys.stderr, flush=True)
    return 2


def main(is_train, argv=None):
    """Run the package's train (``is_train=True``) or test pipeline; returns the exit code."""
    args = build_parser(is_train).parse_args(argv)
    show_traceback = args.debug or os.environ.get('SINCA_TRACEBACK') == '1'

    import basicsr_sinca  # noqa: F401  (registers archs, models, ... into BasicSR's registries)
    from basicsr_sinca.utils.options import (OptionError, apply_force_yml, check_options, dump_options, import_plugins,
                                             load_options, resolve_option_file)

    try:
        opt_path = resolve_option_file(args.opt)
        opt = load_options(opt_path)
        apply_force_yml(opt, args.force_yml)
        if args.print_opt:
            sys.stdout.write(dump_options(opt))
            return 0
        import_plugins(opt)
        resuming = bool(getattr(args, 'auto_resume', False) or (opt.get('path') or {}).get('resume_state'))
        check_options(opt, is_train=is_train, resuming=resuming)
    except OptionError as err:
        message = str(err)
        return _fail(message if message.startswith(args.opt) else f'{args.opt}: {message}')

    try:
        from basicsr_sinca.utils import pipeline
        opt_text = dump_options(opt)
        opt_name = os.path.splitext(os.path.basename(opt_path))[0] + '.yml'
        pipeline.finalize_options(opt, os.getcwd(), is_train, launcher=args.launcher,
                                  auto_resume=getattr(args, 'auto_resume', False), debug=args.debug)
        run = pipeline.train_pipeline if is_train else pipeline.test_pipeline
        run(opt, os.getcwd(), opt_text, opt_name)
    except Exception as err:  # noqa: BLE001 - bad input (or a full disk) is one line, anything else a traceback
        from basicsr_sinca.utils.file_io import CheckpointWriteError
        if not isinstance(err, _USER_ERRORS + (CheckpointWriteError, )):
            traceback.print_exc()
            return 1
        if show_traceback:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        return _fail(f'{args.opt}: {type(err).__name__}: {message} (run with --debug for the traceback)')
    return 0
