"""scripts/benchmark.py --quick: the JSON and table it writes (not timings: those are measured, never asserted)."""


def test_benchmark_quick_output_format(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import REPO, sub_env
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, f'{REPO}/scripts/benchmark.py', '--quick', '--out', str(out)],
                          capture_output=True, text=True, env=sub_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / 'benchmark.json').read_text())
    assert res['quick'] is True and [r['batch'] for r in res['a']] == [1, 8]
    for r in res['a']:
        for key in ('sinca_infer_ms', 'index_infer_ms', 'sinca_train_ms', 'index_train_ms'):
            assert r[key] > 0
        assert abs(r['infer_ratio'] - r['sinca_infer_ms'] / r['index_infer_ms']) < 1e-9
    assert [r['tokens'] for r in res['b']] == res['config']['tokens']
    assert all(r['sinca_ms'] > 0 and 'naive_ms' in r for r in res['b'])
    assert res['c']['transformer_gflop'] > 0 and res['c']['matmul_gflops_per_s'] > 0
    assert len(res['targets']) == 3 and all(isinstance(t['met'], bool) for t in res['targets'])
    table = (out / 'benchmark.md').read_text()
    assert table.count('\n| ') >= 2 + 2 + 3 and '## (a)' in table and '## Targets' in table
    assert table in proc.stdout


def test_benchmark_costs_quick_output_format(tmp_path):
    """--costs --quick: one row per baseline x {original, sinca} through sinca-restore's per-image code."""
    import json
    import subprocess
    import sys

    from helpers import REPO, sub_env
    out = tmp_path / 'costs'
    proc = subprocess.run([sys.executable, f'{REPO}/scripts/benchmark.py', '--costs', '--quick', '--out', str(out)],
                          capture_output=True, text=True, env=sub_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / 'costs.json').read_text())
    assert [(r['baseline'], r['variant']) for r in res['d']] == [
        ('CodeFormer (tiny)', 'original'), ('CodeFormer (tiny)', 'sinca'),
        ('FeMaSR x4 (tiny)', 'original'), ('FeMaSR x4 (tiny)', 'sinca')]
    assert [r['kind'] for r in res['d']] == ['face', 'face', 'sr', 'sr']
    assert [r['output'] for r in res['d']] == ['64x64', '64x64', '96x96', '96x96']
    for r in res['d']:
        side = int(r['output'].split('x')[0])
        assert r['seconds'] > 0 and abs(r['seconds_per_mp'] - r['seconds'] / (side * side / 1e6)) < 1e-6
        assert r['params_M'] > 0
    table = (out / 'costs.md').read_text()
    assert table.count('\n| ') == 1 + 4 and table in proc.stdout
