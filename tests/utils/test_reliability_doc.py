"""docs/reliability.md stays true: every test it names exists; plus the two small cases it lists from here."""
import re
from os import path as osp

import pytest
import torch
from helpers import REPO


def test_every_row_names_existing_tests():
    text = open(osp.join(REPO, 'docs', 'reliability.md'), encoding='utf-8').read()
    rows = [line for line in text.splitlines() if line.startswith('| ') and not line.startswith('| input or fault')]
    assert len(rows) >= 20
    for row in rows:
        refs = re.findall(r'`(tests/[\w/]+\.py)::(\w+)`', row)
        assert refs, f'row without a test: {row}'
        for path, name in refs:
            source = open(osp.join(REPO, path), encoding='utf-8').read()
            assert re.search(rf'^def {name}\(', source, re.M), f'{path}::{name} (named in docs/reliability.md)'


def test_quickstart_refuses_zero_counts(capsys):
    from basicsr_sinca.quickstart import build_parser
    for flag in ('--seeds', '--iters', '--prior_iters', '--jobs'):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([flag, '0'])
        assert exc.value.code == 2 and f'argument {flag}: expected 1 or more, got 0' in capsys.readouterr().err
    assert build_parser().parse_args(['--seeds', '2']).seeds == 2


def test_explicit_param_key_is_not_silently_replaced(tmp_path):
    from basicsr_sinca.utils.checkpoint import read_state_dict
    path = tmp_path / 'net.pth'
    torch.save({'params': {'w': torch.ones(1)}}, path)
    assert read_state_dict(str(path), 'params_ema', ('params_ema', 'params'))[1] == 'params'  # the default falls back
    with pytest.raises(ValueError, match=r"no state dict under 'parms' \(top-level keys: \['params'\]\)"):
        read_state_dict(str(path), 'parms', ())
