"""Test with BasicSR's pipeline: ``python basicsr_sinca/test.py -opt options/test/xxx.yml``.

Also ``python -m basicsr_sinca.test`` and the ``sinca-test`` console script. See ``--help``.
"""
import sys
from os import path as osp

if __name__ == '__main__' and not __package__:
    # run as a file: import the package from the repository root, not from this folder
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

from basicsr_sinca.utils.launch import main as _launch  # noqa: E402


def main(argv=None):
    return _launch(is_train=False, argv=argv)


if __name__ == '__main__':
    sys.exit(main())
