"""docs/claims.md stays true: every README claim it lists names tests that exist, or a measured run with its
command."""
import re
from os import path as osp

from helpers import REPO


def test_every_claim_names_existing_tests_or_a_measured_run():
    text = open(osp.join(REPO, 'docs', 'claims.md'), encoding='utf-8').read()
    rows = [line for line in text.splitlines() if line.startswith('| ') and not line.startswith('| claim')]
    assert len(rows) >= 40
    for row in rows:
        refs = re.findall(r'`(tests/[\w/]+\.py)::(\w+)`', row)
        assert refs or 'measured run: `' in row, f'row with neither a test nor a measured run: {row}'
        for path, name in refs:
            source = open(osp.join(REPO, path), encoding='utf-8').read()
            assert re.search(rf'^def {name}\(', source, re.M), f'{path}::{name} (named in docs/claims.md)'


def test_readme_option_features_are_in_the_table():
    """The option-file features README names each have their row."""
    text = open(osp.join(REPO, 'docs', 'claims.md'), encoding='utf-8').read()
    for feature in ('`_delete_: true`', '`datasets.<phase>: ~`', '`path.experiments_root`', '`--debug`'):
        assert feature in text, feature
    readme = open(osp.join(REPO, 'README.md'), encoding='utf-8').read()
    assert 'docs/claims.md' in readme
