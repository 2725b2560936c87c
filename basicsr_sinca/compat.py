"""The package's one change to another library's import state, made on ``import basicsr_sinca``.

:func:`apply_import_shims`: the basicsr 1.4.2 release imports ``torchvision.transforms.functional_tensor``,
which torchvision >= 0.17 removed (fixed upstream after the release, XPixelGroup/BasicSR#650, and in
``basicsr-fixed``). When, and only when, that module is missing, ``sys.modules`` gets an alias to
``torchvision.transforms.functional``. It adds a name Python could not import; it replaces nothing.

Nothing in ``basicsr.*`` is assigned to anywhere in the package: BasicSR's CPU and resume defects are fixed in
the package's own model base (:class:`basicsr_sinca.models.base.SinCABaseModel`) and training pipeline
(:mod:`basicsr_sinca.utils.pipeline`), and offered upstream as patches (``upstream/basicsr/``).
"""
import importlib
import sys

__all__ = ['apply_import_shims']


def apply_import_shims():
    """Alias ``torchvision.transforms.functional_tensor`` if this torchvision lacks it (basicsr 1.4.2)."""
    try:
        importlib.import_module('torchvision.transforms.functional_tensor')
    except ImportError:
        import torchvision.transforms.functional as tv_functional
        sys.modules.setdefault('torchvision.transforms.functional_tensor', tv_functional)
