#!/usr/bin/env python
"""Alias of ``sinca-restore`` (``python -m basicsr_sinca.restore``), kept for CodeFormer users; same arguments (see
``--help``); without ``--opt`` the network is the official CodeFormer."""
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from basicsr_sinca.restore import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
