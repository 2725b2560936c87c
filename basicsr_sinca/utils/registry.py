"""Registration helpers shared by the auto-importing subpackages."""
import importlib
from os import path as osp

from basicsr.utils import scandir
from basicsr.utils.registry import Registry

__all__ = ['import_modules', 'BOTTLENECK_REGISTRY']

# Bottlenecks (the VQ replacement chosen in YAML, see basicsr_sinca/archs/bottleneck_arch.py).
# BasicSR has no registry of this kind, so it lives here.
BOTTLENECK_REGISTRY = Registry('bottleneck')


def import_modules(package, package_file, suffix):
    """Import every ``*{suffix}`` module beside ``package_file`` so that its decorators register.

    Args:
        package (str): Dotted name of the package, e.g. ``'basicsr_sinca.archs'``.
        package_file (str): The package's ``__file__``.
        suffix (str): File name ending, e.g. ``'_arch.py'``.

    Returns:
        list[module]: The imported modules, in file-name order.
    """
    folder = osp.dirname(osp.abspath(package_file))
    names = sorted(osp.splitext(v)[0] for v in scandir(folder) if v.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]
