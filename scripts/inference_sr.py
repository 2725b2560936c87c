#!/usr/bin/env python
"""Alias of ``sinca-restore`` (``python -m basicsr_sinca.restore``) for SR networks; same arguments, see ``--help``.

Kept for users of the former SR script: without ``--opt`` the network is the official FeMaSR of the ``-s`` factor
(``options/test/femasr/test_femasr_official_x{2,4}.yml``; default x4).
"""
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from basicsr_sinca import restore  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a == '--opt' or a.startswith('--opt=') for a in argv):
        scale = restore.parse_args(argv).scale or 4
        argv += ['--opt', f'test/femasr/test_femasr_official_x{scale}']
    return restore.main(argv)


if __name__ == '__main__':
    sys.exit(main())
