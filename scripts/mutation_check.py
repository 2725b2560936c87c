#!/usr/bin/env python
"""Mutation check: plant each bug of ``tests/mutations.py`` in a temporary copy of the repository, one at a time,
and run the tests named for it; a mutation is caught when they fail.

Prints one line per mutation and a summary; ``--write docs/mutation.md`` records the result. Exit status 1 when
any mutation is missed (or cannot be applied). The copy is made from the files git tracks plus uncommitted
changes, so the check runs on the working tree; the golden cases are read from where the suite reads them.

Example::

    python scripts/mutation_check.py                 # all (several minutes on 2 cores)
    python scripts/mutation_check.py --only stage3-w-ignored dataset-rng-ignores-index
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OUTCOMES = {0: 'MISSED', 1: 'caught', 5: 'no tests ran'}  # pytest exit status -> outcome


def load_mutations():
    sys.path.insert(0, osp.join(REPO, 'tests'))
    from mutations import MUTATIONS
    return MUTATIONS


def copy_tree(dst):
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split('\n')
    for rel in filter(None, files):
        src = osp.join(REPO, rel)
        if osp.isfile(src):
            os.makedirs(osp.dirname(osp.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, osp.join(dst, rel))


def run_one(mutation, root, env, timeout):
    path = osp.join(root, mutation['file'])
    with open(path, encoding='utf-8') as f:
        original = f.read()
    if original.count(mutation['old']) != 1:
        return 'not applicable', 0.0
    with open(path, 'w', encoding='utf-8') as f:
        f.write(original.replace(mutation['old'], mutation['new']))
    start = time.time()
    try:
        cmd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *mutation['tests']]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        outcome = OUTCOMES.get(proc.returncode, f'error (pytest {proc.returncode})')
    except subprocess.TimeoutExpired:
        outcome = 'timeout'
    finally:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(original)
    return outcome, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='+', metavar='ID', help='run these mutations only')
    parser.add_argument('--write', metavar='MD', help='also write the result table to this Markdown file')
    parser.add_argument('--timeout', type=int, default=900, help='seconds per mutation (default 900)')
    args = parser.parse_args(argv)

    mutations = load_mutations()
    if args.only:
        unknown = sorted(set(args.only) - {m['id'] for m in mutations})
        if unknown:
            print(f'error: unknown mutation id(s): {unknown}', file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m['id'] in args.only]
    sys.path.insert(0, osp.join(REPO, 'tests'))
    from golden import GOLDEN_DIR
    rows = []
    with tempfile.TemporaryDirectory(prefix='sinca_mutation_') as root:
        copy_tree(root)
        env = dict(os.environ, PYTHONPATH=root, SINCA_GOLDEN_DIR=GOLDEN_DIR)
        for m in mutations:
            outcome, seconds = run_one(m, root, env, args.timeout)
            rows.append((m, outcome, seconds))
            print(f"{outcome:>14}  {m['id']:<40} {seconds:6.1f} s", flush=True)
    caught = sum(outcome == 'caught' for _, outcome, _ in rows)
    print(f'{caught} of {len(rows)} mutations caught')
    if args.write:
        lines = ['# Mutation check', '', f'`python scripts/mutation_check.py` ({time.strftime("%Y-%m-%d")}): '
                 f'{caught} of {len(rows)} caught.', '', '| mutation | file | outcome | tests | time |',
                 '|---|---|---|---|---|']
        for m, outcome, seconds in rows:
            tests = ', '.join(f'`{t}`' for t in m['tests'])
            lines.append(f"| {m['id']} | `{m['file']}` | {outcome} | {tests} | {seconds:.0f} s |")
        with open(args.write, 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines) + '\n')
    return 0 if caught == len(rows) else 1


if __name__ == '__main__':
    sys.exit(main())
