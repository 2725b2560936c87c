#!/usr/bin/env python
"""Alias of ``sinca-restore`` (``python -m basicsr_sinca.restore``) for face networks; same arguments, see ``--help``.

Kept for users of the former face script: whole photos (detect, align, restore, paste back) by default, aligned
crops with ``--has_aligned``; the network from ``--opt`` (default: the official CodeFormer).
"""
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from basicsr_sinca.restore import main  # noqa: E402

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
