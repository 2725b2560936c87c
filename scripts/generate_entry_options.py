#!/usr/bin/env python
"""Generate the flat entry option files ``options/<baseline>_sinca.yml`` from their ``_base_`` sources.

BasicSR's own parser reads one plain YAML file (no ``_base_``) and knows no plugin. Each entry file is the
resolved source (what ``sinca-train -opt <source> --print_opt`` prints), headed by ``plugins:
[!!python/name:basicsr_sinca.__name__]``, which BasicSR's YAML loader honours by importing the package, so
``python basicsr/train.py -opt options/codeformer_sinca.yml`` works with an unmodified BasicSR. Edit the sources
under ``options/train/``, never the generated files; ``--check`` (run by the tests) fails when one is stale.

Example::

    python scripts/generate_entry_options.py           # rewrite options/*_sinca.yml
    python scripts/generate_entry_options.py --check   # exit 1 and name the stale files
"""
import argparse
import sys
import textwrap
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# entry file -> (source under options/, what it trains)
ENTRIES = {
    'codeformer_sinca': ('train/codeformer/stage2_sinca.yml',
                         'CodeFormer + SinCA, stage 2 (the stage the paper changes); then stage 3 with '
                         'options/train/codeformer/stage3_sinca.yml'),
    'femasr_sinca': ('train/femasr/x4_sinca.yml', 'FeMaSR x4 + SinCA (the paper\'s SR setting)'),
    'daefr_sinca': ('train/daefr/final_sinca.yml',
                    'DAEFR + SinCA, the final stage, from the released HQ codebook and association checkpoints'),
    'adacode_sinca': ('train/adacode/x4_sinca.yml',
                      'AdaCode + SinCA x4, stage 3: five SinCA transformers from the released stage-2 HQ model'),
    'restoreformer_sinca': ('train/restoreformer/sinca.yml',
                            'RestoreFormer + SinCA in place of its nearest lookup, from the released RestoreFormer '
                            'and HQ dictionary'),
    'vqfr_sinca': ('train/vqfr/v2_sinca.yml',
                   'VQFR v2 + SinCA in place of feat2index + lookup, from the released VQFR v2 and its codebook '
                   'prior'),
}


def render(name, options_root=None):
    """The text of entry file ``name`` (deterministic: no dates, no machine paths)."""
    from basicsr_sinca.utils.options import dump_options, load_options
    options_root = options_root or osp.join(REPO, 'options')
    source, what = ENTRIES[name]
    opt = load_options(osp.join(options_root, source))
    header = (''.join(f'# {line}\n' for line in textwrap.wrap(f'Entry file: {what}.', 116)) +
              f'# GENERATED from options/{source} by scripts/generate_entry_options.py: edit the source, not this.\n'
              f'#   python basicsr/train.py -opt options/{name}.yml      (BasicSR\'s own entry, from its checkout)\n'
              f'#   sinca-train -opt {name}                          (this package\'s entry, exact resume, CPU DDP)\n')
    return header + dump_options(opt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 naming every entry file that differs from a fresh generation')
    parser.add_argument('--options', default=osp.join(REPO, 'options'),
                        help='the options folder (default: %(default)s)')
    args = parser.parse_args(argv)

    from basicsr_sinca.utils.file_io import atomic_open
    stale = []
    for name in ENTRIES:
        path = osp.join(args.options, f'{name}.yml')
        text = render(name, args.options)
        current = open(path, encoding='utf-8').read() if osp.isfile(path) else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            with atomic_open(path, 'w') as f:
                f.write(text)
            print(f'wrote {path}')
    if args.check and stale:
        print('stale entry files (run python scripts/generate_entry_options.py): ' + ', '.join(stale), file=sys.stderr)
        return 1
    if not stale:
        print(f'{len(ENTRIES)} entry files up to date')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    sys.exit(main())
