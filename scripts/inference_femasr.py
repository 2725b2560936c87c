#!/usr/bin/env python
"""Alias of ``scripts/inference_sr.py`` (the SR script of every SR network), kept for FeMaSR users; same arguments
(see ``--help``)."""
import sys
from os import path as osp

if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    from inference_sr import main
    sys.exit(main())
