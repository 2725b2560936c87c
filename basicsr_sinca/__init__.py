"""basicsr_sinca: Self-in-Cross-Attention bottlenecks for VQ-based blind image restoration, as a BasicSR plugin.

Importing the package registers its archs, datasets, losses, metrics and models into BasicSR's registries.
"""
from basicsr_sinca.compat import apply_import_shims

apply_import_shims()  # must run before the first ``import basicsr`` (basicsr 1.4.2 release)

from basicsr_sinca import archs, data, losses, metrics, models  # noqa: E402,F401
from basicsr_sinca.version import __version__  # noqa: E402,F401
