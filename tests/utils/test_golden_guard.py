"""The golden cases cannot be skipped by accident: a missing golden folder stops the run with one line, a missing
case fails its test; only SINCA_ALLOW_MISSING_GOLDENS=1 turns them into skips."""
import subprocess
import sys

from helpers import REPO, sub_env

SELECT = ['tests/archs/test_codeformer_arch.py::test_vqgan_keys_and_calls']


def _pytest(golden_dir, opt_out=False):
    env = dict(sub_env(), SINCA_GOLDEN_DIR=str(golden_dir))
    env.pop('SINCA_ALLOW_MISSING_GOLDENS', None)
    if opt_out:
        env['SINCA_ALLOW_MISSING_GOLDENS'] = '1'
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *SELECT], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_missing_golden_folder_stops_the_run_in_one_line(tmp_path):
    proc = _pytest(tmp_path / 'nowhere')
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()  # pytest also echoes it in its summary on stdout
    assert len(lines) == 1 and 'golden cases not found at' in lines[0], proc.stderr
    assert str(tmp_path / 'nowhere') in lines[0] and 'SINCA_GOLDEN_DIR' in lines[0]


def test_missing_case_fails_and_only_the_opt_out_skips(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    proc = _pytest(empty)
    assert proc.returncode == 1 and 'golden cases not found at' in proc.stdout and ' skipped' not in proc.stdout
    proc = _pytest(empty, opt_out=True)
    assert proc.returncode == 0 and ' skipped' in proc.stdout and ' passed' not in proc.stdout, proc.stdout
