"""The option-file features README promises, each through our entry: ``_delete_: true`` replaces an inherited subtree,
``datasets.<phase>: ~`` drops an inherited dataset, ``path.experiments_root`` / ``path.results_root`` move the
output folders, ``--debug`` is BasicSR's debug mode and shows tracebacks. Runs are subprocesses (BasicSR's logger is
per process)."""
import torch
from helpers import entry_cmd, read_train_log, run_cmd, tiny_sr_options, write_yaml

from basicsr_sinca.utils.launch import main as launch_main
from basicsr_sinca.utils.options import load_options


def _base_and_child(tmp_path, sr_pairs, child_text, name):
    """``<name>.yml`` inheriting a tiny SR training file (``base.yml``, 2 iterations), plus ``child_text``."""
    base = tiny_sr_options(sr_pairs, 'base', total_iter=2)
    base['network_g'] = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2,
                         'upscale': 2}
    write_yaml(tmp_path / 'base.yml', base)
    (tmp_path / f'{name}.yml').write_text(f'_base_: ./base.yml\nname: {name}\n{child_text}')
    return str(tmp_path / f'{name}.yml')


def test_delete_replaces_an_inherited_subtree(tmp_path, sr_pairs, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    child = _base_and_child(tmp_path, sr_pairs, 'network_g:\n  _delete_: true\n  type: SRVGGNetCompact\n'
                            '  num_feat: 8\n  num_conv: 2\n  upscale: 2\n', 'deleted')
    opt = load_options(child)
    assert opt['network_g'] == {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 2}
    # without _delete_ the child's keys merge into the inherited ones (and MSRResNet's keys would stay)
    merged = _base_and_child(tmp_path, sr_pairs, 'network_g:\n  num_feat: 8\n', 'merged')
    assert load_options(merged)['network_g']['num_block'] == 2
    # the entry accepts the replaced subtree (the strict key check sees SRVGGNetCompact's arguments only) and trains
    run_cmd(entry_cmd('train', '-opt', child), cwd=tmp_path)
    ckpt = torch.load(tmp_path / 'experiments' / 'deleted' / 'models' / 'net_g_2.pth', map_location='cpu')
    assert 'body.0.weight' in ckpt['params'] and 'conv_first.weight' not in ckpt['params']


def test_null_phase_drops_an_inherited_dataset(tmp_path, sr_pairs, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    child = _base_and_child(tmp_path, sr_pairs, 'datasets:\n  val: ~\nval: ~\n', 'no_val')
    assert launch_main(True, ['-opt', child, '--print_opt']) == 0
    printed = tmp_path / 'printed.yml'
    printed.write_text(capsys.readouterr().out)
    opt = load_options(str(printed))
    assert set(opt['datasets']) == {'train'} and opt['datasets']['train']['name'] == 'tiny_train'
    run_cmd(entry_cmd('train', '-opt', child), cwd=tmp_path)
    log = read_train_log(tmp_path / 'experiments' / 'no_val')
    assert 'Validation' not in log and 'tiny_val' not in log
    assert (tmp_path / 'experiments' / 'no_val' / 'models' / 'net_g_2.pth').is_file()


def test_experiments_root_and_results_root_move_the_outputs(tmp_path, sr_pairs):
    work, elsewhere = tmp_path / 'work', tmp_path / 'elsewhere'
    work.mkdir()
    opt = tiny_sr_options(sr_pairs, 'moved', total_iter=2)
    opt['path']['experiments_root'] = str(elsewhere / 'exps')
    run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'train.yml', opt)), cwd=work)
    ckpt = elsewhere / 'exps' / 'moved' / 'models' / 'net_g_2.pth'
    assert ckpt.is_file() and (elsewhere / 'exps' / 'moved' / 'training_states' / '2.state').is_file()
    test_opt = {'name': 'moved_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
                'datasets': {'test_1': dict(opt['datasets']['val'], name='tiny_set')},
                'network_g': opt['network_g'],
                'path': {'pretrain_network_g': str(ckpt), 'param_key_g': 'params', 'strict_load_g': True,
                         'results_root': str(elsewhere / 'res')},
                'val': {'save_img': True, 'suffix': None, 'metrics': opt['val']['metrics']}}
    run_cmd(entry_cmd('test', '-opt', write_yaml(tmp_path / 'test.yml', test_opt)), cwd=work)
    assert len(list((elsewhere / 'res' / 'moved_test' / 'visualization' / 'tiny_set').glob('*.png'))) == 6
    assert sorted(p.name for p in work.iterdir()) == []  # nothing under the working directory


def test_debug_mode_names_the_run_and_shows_tracebacks(tmp_path, sr_pairs):
    opt = tiny_sr_options(sr_pairs, 'dbg', total_iter=2)
    run_cmd(entry_cmd('train', '-opt', write_yaml(tmp_path / 'ok.yml', opt), '--debug'), cwd=tmp_path)
    assert (tmp_path / 'experiments' / 'debug_dbg' / 'models' / 'net_g_latest.pth').is_file()
    assert not (tmp_path / 'experiments' / 'dbg').exists()
    # an error BasicSR raises while building the model: one line without --debug, the traceback with it
    bad = write_yaml(tmp_path / 'bad.yml', tiny_sr_options(sr_pairs, 'bad', train={'optim_g': {'type': 'Lion'}}))
    proc = run_cmd(entry_cmd('train', '-opt', bad), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert 'optimizer Lion is not supported' in last and last.endswith('(run with --debug for the traceback)')
    proc = run_cmd(entry_cmd('train', '-opt', bad, '--debug'), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback (most recent call last)' in proc.stderr
    assert 'optimizer Lion is not supported' in proc.stderr.strip().splitlines()[-1]
