"""Nothing in the package or its scripts assigns into BasicSR: no module attribute, class attribute or method of
anything imported from ``basicsr`` is replaced (static check of every source file)."""
import ast
import glob
from os import path as osp

from helpers import REPO


def _basicsr_names(tree):
    """Local names bound to basicsr modules or to objects imported from them."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == 'basicsr' or alias.name.startswith('basicsr.'):
                    names.add((alias.asname or alias.name).split('.')[0])
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == 'basicsr'
                                                                   or node.module.startswith('basicsr.')):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root_name(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _assignments_into(tree, names):
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ('setattr', 'delattr'):
            targets = [ast.Attribute(value=node.args[0], attr='?')] if node.args else []
        for target in targets:
            if isinstance(target, ast.Attribute) and _root_name(target) in names:
                found.append(f'line {node.lineno}: {ast.unparse(target)}')
    return found


def test_no_assignment_into_basicsr():
    files = glob.glob(osp.join(REPO, 'basicsr_sinca', '**', '*.py'), recursive=True)
    files += glob.glob(osp.join(REPO, 'scripts', '*.py'))
    assert len(files) > 40
    offenders = {}
    for path in files:
        tree = ast.parse(open(path, encoding='utf-8').read())
        found = _assignments_into(tree, _basicsr_names(tree))
        if found:
            offenders[osp.relpath(path, REPO)] = found
    assert not offenders, offenders


def test_the_check_sees_a_replacement():
    tree = ast.parse('import basicsr.train as bsr_train\nfrom basicsr.models.base_model import BaseModel\n'
                     'bsr_train.load_resume_state = None\nBaseModel.save_network = print\n'
                     'setattr(BaseModel, "x", 1)\nother = 1\n')
    assert _assignments_into(tree, _basicsr_names(tree)) == [
        'line 3: bsr_train.load_resume_state', 'line 4: BaseModel.save_network', 'line 5: BaseModel.?']
