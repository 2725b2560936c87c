"""The README's main job: the quickstart's --fast mode end to end (stage 1 + five restoration stages + report),
run from the built wheel (no source checkout on the path), as after a plain ``pip install``."""
import json
import math
import sys

from helpers import run_cmd, wheel_env

BOTTLENECKS = ['nearest', 'index', 'sa', 'ca', 'sinca']


def test_quickstart_fast(tmp_path, wheel_site):
    out = tmp_path / 'qs'
    proc = run_cmd([sys.executable, '-m', 'basicsr_sinca.quickstart', '--fast', '--out', out], cwd=tmp_path,
                   timeout=900, env=wheel_env(wheel_site[0]))
    res = json.loads((out / 'results.json').read_text())
    assert res['seeds'] == [0]
    assert list(res['summary']) == BOTTLENECKS
    for name in BOTTLENECKS:
        row = res['summary'][name]
        for metric in ('psnr', 'ssim', 'psnr_to_prior', 'latent_mse') + (() if name == 'index' else ('niqe', )):
            assert math.isfinite(row[metric]['mean']), (name, metric)
        assert (row.get('index_accuracy') is not None) == (name in ('nearest', 'index'))
        if row.get('index_accuracy'):
            assert 0 <= row['index_accuracy']['mean'] <= 1 and 0 < row['codebook_usage']['mean'] <= 1
    assert res['split']['eval_photos'] and set(res['split']['train_photos']).isdisjoint({'stereo_motorcycle'})
    # missing values say why
    assert row_is_none(res['summary']['index']['niqe']) and 'index transformer' in res['empty_columns']['niqe']
    assert math.isfinite(res['references']['GT']['niqe']) and math.isfinite(res['references']['LQ input']['niqe'])
    table = (out / 'results.md').read_text()
    for name in BOTTLENECKS:
        assert f'| {name} |' in table
    assert table in proc.stdout
    for png in ('grid.png', 'attention_split.png', 'attention_maps.png', 'code_stats.png'):
        assert (out / png).stat().st_size > 1000, png
    assert res['timings_s']['total'] > 0
    # every training went through the entry point and left its experiment folder and log
    assert (out / 'experiments' / 'quickstart_prior' / 'models' / 'net_g_latest.pth').is_file()
    assert len(list((out / 'logs').glob('*.log'))) == 6


def row_is_none(value):
    return value is None
