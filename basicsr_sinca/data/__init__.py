# Import every *_dataset.py file here so its classes register in BasicSR's registries.
from basicsr_sinca.utils.registry import import_modules

_modules = import_modules(__name__, __file__, '_dataset.py')
