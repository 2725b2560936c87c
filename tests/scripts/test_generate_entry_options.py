"""The flat entry files are generated, fresh, and BasicSR's own parser reads them."""
import shutil
import sys
from os import path as osp

import pytest
from helpers import REPO

sys.path.insert(0, osp.join(REPO, 'scripts'))
import generate_entry_options  # noqa: E402

from basicsr_sinca.utils.options import load_options  # noqa: E402


def test_entry_files_are_byte_identical_to_a_fresh_generation(capsys):
    assert generate_entry_options.main(['--check']) == 0, capsys.readouterr().err
    for name in generate_entry_options.ENTRIES:
        with open(osp.join(REPO, 'options', f'{name}.yml'), encoding='utf-8') as f:
            assert f.read() == generate_entry_options.render(name)


def test_check_names_a_stale_file_and_generation_fixes_it(tmp_path, capsys):
    options = tmp_path / 'options'
    shutil.copytree(osp.join(REPO, 'options'), options)
    source = options / 'train' / 'femasr' / 'x4_sinca.yml'
    source.write_text(source.read_text() + '\nmanual_seed: 7\n')  # edit a source, not the entry file
    assert generate_entry_options.main(['--check', '--options', str(options)]) == 1
    err = capsys.readouterr().err
    assert 'femasr_sinca.yml' in err and 'codeformer_sinca.yml' not in err
    before = (options / 'codeformer_sinca.yml').read_bytes()
    assert generate_entry_options.main(['--options', str(options)]) == 0
    assert load_options(str(options / 'femasr_sinca.yml'))['manual_seed'] == 7
    assert (options / 'codeformer_sinca.yml').read_bytes() == before  # untouched when fresh
    assert generate_entry_options.main(['--check', '--options', str(options)]) == 0


@pytest.mark.parametrize('name', sorted(generate_entry_options.ENTRIES))
def test_basicsr_parse_options_reads_the_entry_file(name, monkeypatch, tmp_path):
    from basicsr.utils.options import parse_options
    path = osp.join(REPO, 'options', f'{name}.yml')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])  # BasicSR's parser reads sys.argv only
    opt, _ = parse_options(str(tmp_path), is_train=True)
    ours = load_options(path)
    assert opt['plugins'] == ['basicsr_sinca'] and ours['plugins'] == ['basicsr_sinca']
    assert opt['model_type'] == ours['model_type'] and opt['network_g'] == ours['network_g']
    assert opt['path']['experiments_root'] == osp.join(str(tmp_path), 'experiments', ours['name'])
    source = load_options(osp.join(REPO, 'options', generate_entry_options.ENTRIES[name][0]))
    assert {k: v for k, v in ours.items() if k != 'plugins'} == source
