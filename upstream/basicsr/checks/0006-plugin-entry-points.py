"""Check for 0006: a package declaring a ``basicsr.plugins`` entry point is imported by ``import basicsr``.
Run as ``python 0006-plugin-entry-points.py <scratch dir>`` with the patched basicsr first on PYTHONPATH."""
import os
import subprocess
import sys

scratch = sys.argv[1]
os.makedirs(os.path.join(scratch, 'checkplugin'))
with open(os.path.join(scratch, 'checkplugin', '__init__.py'), 'w') as f:
    f.write('from basicsr.utils.registry import ARCH_REGISTRY\nfrom torch import nn\n\n\n'
            '@ARCH_REGISTRY.register()\nclass CheckPluginNet(nn.Module):\n    pass\n')
info = os.path.join(scratch, 'checkplugin-0.1.dist-info')
os.makedirs(info)
with open(os.path.join(info, 'METADATA'), 'w') as f:
    f.write('Metadata-Version: 2.1\nName: checkplugin\nVersion: 0.1\n')
with open(os.path.join(info, 'entry_points.txt'), 'w') as f:
    f.write('[basicsr.plugins]\ncheckplugin = checkplugin\n')

code = 'import basicsr\nfrom basicsr.utils.registry import ARCH_REGISTRY\nprint("CheckPluginNet" in ARCH_REGISTRY)\n'
env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ.get('PYTHONPATH', ''), scratch]))
found = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
assert found.stdout.strip().splitlines()[-1:] == ['True'], found.stdout + found.stderr
env['BASICSR_NO_PLUGINS'] = '1'
off = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
assert off.stdout.strip().splitlines()[-1:] == ['False'], off.stdout + off.stderr
print('ok')
