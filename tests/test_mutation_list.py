"""The mutation list stays applicable: each bug is one place in today's source, and its tests exist."""
import re
from os import path as osp

from helpers import REPO
from mutations import MUTATIONS


def test_every_mutation_applies_once_and_names_existing_tests():
    assert len({m['id'] for m in MUTATIONS}) == len(MUTATIONS) >= 15
    for m in MUTATIONS:
        source = open(osp.join(REPO, m['file']), encoding='utf-8').read()
        assert source.count(m['old']) == 1, m['id']
        assert m['tests'], m['id']
        for node in m['tests']:
            path, _, name = node.partition('::')
            text = open(osp.join(REPO, path), encoding='utf-8').read()
            assert not name or re.search(rf'^def {name}\(', text, re.M), (m['id'], node)
