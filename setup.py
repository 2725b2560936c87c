#!/usr/bin/env python
"""basicsr_sinca: VQ-free blind image restoration (Self-in-Cross-Attention) as a BasicSR plugin."""
import os
import os.path as osp

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))


class BuildPyWithOptions(build_py):
    """Also ship the repository's ``options/`` as ``basicsr_sinca/options`` (package data of an installed copy):
    ``sinca-train -opt codeformer_sinca`` and the quickstart find their option files without a source checkout."""

    def run(self):
        super().run()
        source = osp.join(HERE, 'options')
        target = osp.join(self.build_lib, 'basicsr_sinca', 'options')
        for folder, _, files in os.walk(source):
            for name in sorted(files):
                if name.endswith('.yml'):
                    out = osp.join(target, osp.relpath(osp.join(folder, name), source))
                    self.mkpath(osp.dirname(out))
                    self.copy_file(osp.join(folder, name), out)


def get_version():
    ns = {}
    with open(osp.join(HERE, 'basicsr_sinca', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), ns)
    return ns['__version__']


def get_long_description():
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='basicsr_sinca',
    version=get_version(),
    description='Self-in-Cross-Attention bottlenecks for VQ-based blind image restoration, as a BasicSR plugin',
    long_description=get_long_description(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=('basicsr_sinca', 'basicsr_sinca.*')),
    include_package_data=True,
    # the quickstart's shipped HQ priors and their checksums (basicsr_sinca/weights/__init__.py)
    package_data={'basicsr_sinca.weights': ['*.pth', 'SHA256SUMS']},
    python_requires='>=3.9',
    # torch/torchvision are installed first with an exact pair (see README); the ranges here never pull a new one.
    install_requires=[
        'torch>=1.13',
        'torchvision>=0.14',
        'basicsr-fixed>=1.4.2',
        'mmengine>=0.10',
        'lpips>=0.1.4',
        'opencv-python',
        'pyyaml',
        'scikit-image',
        'tqdm',
        'matplotlib',
        'pillow',
    ],
    extras_require={
        'test': ['pytest>=7', 'pytest-timeout'],
        # whole-photo face restoration: dlib's detector and 5-point landmarks from registry packages (offline),
        # facexlib's RetinaFace / ParseNet when their weights are available
        'face': ['facexlib>=0.3.0', 'dlib-bin>=19.24', 'face-recognition-models>=0.3.0'],
    },
    entry_points={
        'console_scripts': [
            'sinca-train=basicsr_sinca.train:main',
            'sinca-test=basicsr_sinca.test:main',
            'sinca-quickstart=basicsr_sinca.quickstart:main',
            'sinca-restore=basicsr_sinca.restore:main',
        ],
        # read by BasicSR once it discovers plugins (upstream/basicsr/0006-plugin-entry-points.patch)
        'basicsr.plugins': ['basicsr_sinca = basicsr_sinca'],
    },
    cmdclass={'build_py': BuildPyWithOptions},
    license='Apache-2.0',
    zip_safe=False,
)
