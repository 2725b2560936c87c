"""Launch ``basicsr_sinca.train`` with the test-only toy restorer registered (``toy_restorer.py``).

Usage: python tests/toy_train.py -opt toy.yml  (the same arguments as ``python -m basicsr_sinca.train``).
"""
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import toy_restorer  # noqa: E402,F401  (registers ToyPrior / ToyRestorer)
from basicsr_sinca.train import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
