#!/usr/bin/env python
"""Alias of ``scripts/inference_sr.py`` (``sinca-restore`` with the official FeMaSR as the default network), kept for
FeMaSR users; same arguments (see ``--help``)."""
import sys
from os import path as osp

if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from inference_sr import main
    sys.exit(main())
