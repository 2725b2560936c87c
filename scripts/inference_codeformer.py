#!/usr/bin/env python
"""Alias of ``scripts/inference_face.py`` (the face-restoration script of every face network), kept for CodeFormer
users; same arguments (see ``--help``)."""
import sys
from os import path as osp

if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    from inference_face import main
    sys.exit(main())
