"""Option files: ``_base_`` inheritance, ``--force_yml`` overrides and up-front validation.

BasicSR reads one plain YAML file. Our entry points first resolve ``_base_: [...]`` with mmengine's
``Config`` (child keys override base keys, ``_delete_: true`` replaces a subtree, ``datasets.<phase>: ~``
drops an inherited dataset, ``{{_base_.name}}`` inserts a value defined in a base file), apply
``--force_yml key:sub=value`` overrides, and check the result against BasicSR's registries so that a typo
fails in one line naming the key, before any experiment folder is created.

Top-level keys written ``_name_`` (e.g. ``_bottleneck_`` of ``options/_base_/bottleneck/*.yml``) are variables of
the option files: leaf files insert them with ``{{_base_._bottleneck_}}``; they are removed after resolution.

``plugins`` names the packages whose registries the options need. Written by :func:`dump_options` as
``- !!python/name:basicsr_sinca.__name__``: BasicSR's own (full) YAML loader honours the tag by importing the
package and reads the entry as the plain string ``'basicsr_sinca'`` (a module object would break BasicSR's
``deepcopy`` of the options), so a resolved file runs under ``python basicsr/train.py -opt <file>`` with an
unmodified BasicSR. This package's loader reads the tag as the name, without importing anything, and
:func:`import_plugins` imports the listed names once the file has been checked.
"""
import difflib
import functools
import os
import re
from os import path as osp

import yaml

__all__ = ['OptionError', 'load_options', 'dump_options', 'apply_force_yml', 'check_options', 'import_plugins',
           'options_dir', 'resolve_option_file', 'PLUGIN_TAG']

PLUGIN_TAG = 'tag:yaml.org,2002:python/name:'
# BasicSR's conventional top-level order, used when writing options (other keys follow in their own order)
_KEY_ORDER = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_hq',
              'network_d', 'path', 'train', 'val', 'logger', 'dist_params')
_SCI_FLOAT = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$')
_VARIABLE = re.compile(r'^_[A-Za-z0-9]\w*_$')


class OptionError(ValueError):
    """A problem with an option file or value; the message names the file/key and what was expected."""


def _plain(obj):
    """Turn mmengine ConfigDicts into plain dicts/lists, '1e-4'-style strings into floats, keys into strings.

    PyYAML (BasicSR's loader) reads ``1e-4`` as a string; every BasicSR user has hit the resulting
    ``'<=' not supported between 'float' and 'str'`` from the optimizer at least once. BasicSR's option
    printer needs string keys (``{8: 64}`` -> ``{'8': 64}``).
    """
    if isinstance(obj, dict):  # a `_delete_` with nothing inherited to delete stays in mmengine's result
        return {str(k): _plain(v) for k, v in obj.items() if k != '_delete_'}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, str) and _SCI_FLOAT.match(obj):
        return float(obj)
    return obj


class _FlatLoader(yaml.SafeLoader):
    """Safe YAML loader that reads a plugin tag ``!!python/name:<module>.__name__`` as the string ``<module>``;
    nothing is imported, and any other ``python/`` tag is an error."""


def _plugin_name(loader, suffix, node):
    module, _, attr = suffix.rpartition('.')
    if attr != '__name__' or not module:
        raise yaml.constructor.ConstructorError(None, None, f'unsupported tag !!python/name:{suffix} (only '
                                                'plugins entries !!python/name:<module>.__name__)', node.start_mark)
    return module


_FlatLoader.add_multi_constructor(PLUGIN_TAG, _plugin_name)


def _yaml_error(opt_path, err):
    mark = getattr(err, 'problem_mark', None)
    where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark is not None else ''
    problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
    return OptionError(f'{opt_path}: invalid YAML{where}: {problem}')


def _base_files(path):
    """The ``_base_`` files a YAML option file names (absolute paths; ``{{...}}`` substitutions ignored)."""
    with open(path, encoding='utf-8') as f:
        text = re.sub(r'\{\{[^}]*\}\}', 'x', f.read())
    try:
        raw = yaml.load(text, Loader=_FlatLoader)
    except yaml.YAMLError:
        return []  # reported by the full read
    bases = raw.get('_base_') if isinstance(raw, dict) else None
    bases = [bases] if isinstance(bases, str) else bases or []
    return [osp.normpath(osp.join(osp.dirname(path), b)) for b in bases if isinstance(b, str)]


def _check_base_chain(opt_path, chain=()):
    """Raise :class:`OptionError` naming the files if the ``_base_`` inheritance loops."""
    path = osp.abspath(opt_path)
    if path in chain:
        loop = ' -> '.join(osp.basename(p) for p in chain[chain.index(path):] + (path, ))
        raise OptionError(f'{opt_path}: _base_ files include each other: {loop}')
    for base in _base_files(path):
        if base.endswith(('.yml', '.yaml')) and osp.isfile(base):
            _check_base_chain(base, chain + (path, ))


def load_options(opt_path):
    """Read an option file and resolve its ``_base_`` chain.

    A file without ``_base_`` (e.g. a generated entry file) is read with a safe loader that takes ``plugins``
    tags as names; files with ``_base_`` are resolved by mmengine's ``Config``.

    Args:
        opt_path (str): YAML (or mmengine ``.py``) option file.

    Returns:
        dict: Plain, fully resolved options (no ``_base_`` key).

    Raises:
        OptionError: missing file, missing base file or invalid YAML.
    """
    from mmengine.config import Config

    if not osp.isfile(opt_path):
        raise OptionError(f'option file not found: {opt_path}')
    raw = None
    if opt_path.endswith(('.yml', '.yaml')):
        with open(opt_path, encoding='utf-8') as f:
            text = f.read()
        if not text.strip():
            raise OptionError(f'{opt_path}: the file is empty')
        if '_base_' in text:
            _check_base_chain(opt_path)
        else:  # a flat file; inheritance (and `{{_base_.x}}`) is mmengine's
            try:
                raw = yaml.load(text, Loader=_FlatLoader)
            except yaml.YAMLError as err:
                raise _yaml_error(opt_path, err) from None
    if raw is None:
        try:
            raw = Config.fromfile(opt_path).to_dict()
        except FileNotFoundError as err:
            raise OptionError(f'{opt_path}: _base_ file not found: {err}') from None
        except yaml.YAMLError as err:
            raise _yaml_error(opt_path, err) from None
    if not isinstance(raw, dict):
        raise OptionError(f'{opt_path}: expected a mapping of options at the top level')
    opt = _plain(raw)
    opt = {k: v for k, v in opt.items() if not _VARIABLE.match(k)}  # _base_ and option-file variables
    if isinstance(opt.get('datasets'), dict):  # `phase: ~` in a child drops a phase inherited from a base
        opt['datasets'] = {k: v for k, v in opt['datasets'].items() if v is not None}
    if not opt:
        raise OptionError(f'{opt_path}: the file holds no options')
    return opt


def dump_options(opt):
    """Options as the plain YAML text BasicSR reads (key order kept), ``plugins`` first and tagged so that
    BasicSR's own loader imports them (``basicsr_sinca`` is always listed)."""
    plugins = ['basicsr_sinca'] + [p for p in opt.get('plugins') or [] if p != 'basicsr_sinca']
    first = [k for k in _KEY_ORDER if k in opt]
    rest = {k: opt[k] for k in first + [k for k in opt if k not in _KEY_ORDER and k != 'plugins']}
    head = 'plugins:\n' + ''.join(f'- !!python/name:{name}.__name__\n' for name in plugins)
    return head + yaml.safe_dump(rest, sort_keys=False, default_flow_style=False, allow_unicode=True)


def import_plugins(opt):
    """Import every module named in ``opt['plugins']`` (their registrations become available).

    Raises:
        OptionError: ``plugins`` is not a list of module names, or one cannot be imported.
    """
    import importlib

    plugins = opt.get('plugins') or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise OptionError(f'plugins: expected a list of module names, got {plugins!r}')
    for name in plugins:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise OptionError(f'plugins: cannot import {name!r}: {err}') from None


def options_dir():
    """The option files shipped with the package: ``basicsr_sinca/options`` in an installed wheel, the repository's
    ``options/`` in a source checkout."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for folder in (osp.join(package, 'options'), osp.join(osp.dirname(package), 'options')):
        if osp.isdir(folder):
            return folder
    raise OptionError(f'no option files found beside the package ({package}): reinstall basicsr_sinca')


def resolve_option_file(name):
    """An option file path for ``name``: an existing file as given, else a packaged file
    (``codeformer_sinca`` -> ``<options>/codeformer_sinca.yml``).

    Raises:
        OptionError: neither exists; the message lists the packaged entry files.
    """
    if osp.isfile(name):
        return name
    looks_like_name = not osp.isabs(name) and not name.startswith('.')
    if looks_like_name:
        folder = options_dir()
        for candidate in (name, name + '.yml'):
            path = osp.join(folder, candidate)
            if osp.isfile(path):
                return path
        entries = sorted(osp.splitext(v)[0] for v in os.listdir(folder) if v.endswith('.yml'))
        raise OptionError(f"option file not found: {name} (not a file, nor a packaged option name such as "
                          f"{', '.join(entries)}; others are under {folder})")
    raise OptionError(f'option file not found: {name}')


def apply_force_yml(opt, entries):
    """Apply BasicSR-style overrides ``'train:ema_decay=0.999'`` to ``opt`` in place.

    Values are parsed with BasicSR's own rules (``~``/``none`` -> None, booleans, ``!!float``, numbers,
    lists). Intermediate keys must exist and be mappings.
    """
    from basicsr.utils.options import _postprocess_yml_value

    for entry in entries or []:
        if '=' not in entry:
            raise OptionError(f"--force_yml {entry!r}: expected 'key:subkey=value'")
        keys, value = entry.split('=', 1)
        keys = [k.strip() for k in keys.split(':')]
        node = opt
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise OptionError(f"--force_yml {entry!r}: '{':'.join(keys[:i + 1])}' is not a mapping in the options")
            node = node[key]
        node[keys[-1]] = _plain(_postprocess_yml_value(value.strip()))  # '2e-4' is a float here too
    return opt


def _registry_lookup(registry, name):
    """True if BasicSR's ``Registry.get`` would find ``name`` (it also tries ``name + '_basicsr'``)."""
    return name in registry or f'{name}_basicsr' in registry


def _check_type(registry, what, key, spec):
    if not isinstance(spec, dict) or 'type' not in spec:
        raise OptionError(f"{key}: expected a mapping with a 'type' key, got {spec!r}")
    name = spec['type']
    if not isinstance(name, str) or not _registry_lookup(registry, name):
        close = difflib.get_close_matches(str(name), [k for k in registry.keys()], n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise OptionError(f'{key}: unknown {what} {name!r}{hint}')


def _named_specs(key, spec, named):
    """``[(where, spec)]``: the spec itself, or, where names are allowed (``network_d``, ``train.gan_opt``) and the
    mapping has no ``type``, each named entry."""
    if named and isinstance(spec, dict) and 'type' not in spec and spec and \
            all(isinstance(v, dict) for v in spec.values()):
        return [(f'{key}.{name}', sub) for name, sub in spec.items()]
    return [(key, spec)]


def _check_file_keys(where, spec):
    """Keys ending in ``_path`` (``model_path``, ``vqgan_path``, ``backbone_path``) name files that must exist, as do
    the entries of keys ending in ``_paths`` (``codebook_paths``)."""
    for key, value in spec.items():
        if key.endswith('_path') and isinstance(value, str) and not osp.isfile(osp.expanduser(value)):
            raise OptionError(f'{where}.{key}: file not found: {value}')
        if key.endswith('_paths') and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if not isinstance(item, str) or not osp.isfile(osp.expanduser(item)):
                    raise OptionError(f'{where}.{key}[{i}]: file not found: {item}')


# keys BasicSR's parser, pipeline and loggers read or write, per section (model classes add what they read)
_BASICSR_TOP = {'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val', 'logger',
                'dist_params', 'find_unused_parameters', 'plugins', 'is_train', 'dist', 'rank', 'world_size',
                'auto_resume', 'root_path'}
_BASICSR_PATH = {'resume_state', 'experiments_root', 'results_root', 'ignore_resume_networks', 'models',
                 'training_states', 'log', 'visualization'}
_PATH_PATTERNS = ('pretrain_network_', 'param_key_', 'strict_load_')
_BASICSR_LOGGER = {'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'}
_BASICSR_DATASET = {'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu',
                    'dataset_enlarge_ratio', 'use_shuffle', 'pin_memory', 'persistent_workers', 'prefetch_mode',
                    'num_prefetch_queue'}
_BASICSR_TRAIN = {'total_iter', 'warmup_iter'}
_BASICSR_VAL = {'val_freq', 'save_img', 'metrics', 'suffix', 'pbar'}


@functools.lru_cache(maxsize=None)
def _source_strings(objs):
    """Every string constant in the source modules of ``objs`` and their bases (BasicSR's and this package's):
    the option keys they can read. Keys outside this set are read by nothing."""
    import ast
    import inspect
    import sys

    modules = set()
    for obj in objs:
        for cls in (obj.__mro__ if inspect.isclass(obj) else [obj]):
            name = getattr(cls, '__module__', '') or ''
            if name.split('.')[0] in ('basicsr', 'basicsr_sinca') and name in sys.modules:
                modules.add(name)
    strings = set()
    for name in sorted(modules):
        try:
            tree = ast.parse(inspect.getsource(sys.modules[name]))
        except (OSError, TypeError, SyntaxError):
            continue
        strings.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    # keys built as f'{key}{suffix}' (e.g. CodeFormer stage 3's blur_sigma_large from blur_sigma + '_large')
    suffixes = {v for v in strings if re.fullmatch(r'_[a-z]+', v)}
    strings |= {f'{key}{suffix}' for key in strings for suffix in suffixes if re.fullmatch(r'[a-z_]+', key)}
    return strings


def _unknown(where, mapping, known, patterns=()):
    for key, value in mapping.items():
        if value is None or key in known or (isinstance(key, str) and key.startswith(patterns)):
            continue  # `key: ~` unsets an inherited key
        close = difflib.get_close_matches(str(key), sorted(k for k in known if isinstance(k, str)), n=1, cutoff=0.7)
        hint = f"; did you mean '{where}{close[0]}'?" if close else ''
        raise OptionError(f"{where}{key}: unknown option (nothing reads it){hint}")


def _check_call_arguments(where, spec, target):
    """Arguments of an arch / loss (``spec`` without ``type``) against ``target``'s signature."""
    import inspect
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    _unknown(f'{where}.', {k: v for k, v in spec.items() if k != 'type'}, set(params) - {'self'})


def check_known_keys(opt, is_train):
    """Refuse option keys nothing reads (a misspelling is otherwise silently ignored), with a suggestion.

    Checked: top-level, ``path``, ``logger``, ``train`` and ``val`` keys (against what BasicSR and the model class
    read), every dataset's keys (against its dataset class and BasicSR's loader), arch and loss arguments (against
    their signatures), ``train.total_iter`` > 0 and numeric optimizer learning rates.

    Raises:
        OptionError: the first unknown key or bad value, with the closest known key.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    from basicsr_sinca.utils import pipeline
    model_cls = MODEL_REGISTRY.get(opt['model_type'])
    model_keys = _source_strings((model_cls, pipeline.train_pipeline))
    _unknown('', {k: v for k, v in opt.items() if not str(k).startswith('network_')}, _BASICSR_TOP | model_keys)
    _unknown('path.', opt.get('path') or {}, _BASICSR_PATH | model_keys, _PATH_PATTERNS)
    _unknown('logger.', opt.get('logger') or {}, _BASICSR_LOGGER)
    if is_train and isinstance(opt.get('train'), dict):
        _unknown('train.', opt['train'], _BASICSR_TRAIN | model_keys)
    if isinstance(opt.get('val'), dict):
        _unknown('val.', opt['val'], _BASICSR_VAL | model_keys)

    for phase, ds in (opt.get('datasets') or {}).items():
        if isinstance(ds, dict) and ds.get('type') in DATASET_REGISTRY:
            from basicsr.data import build_dataloader
            known = _BASICSR_DATASET | _source_strings((DATASET_REGISTRY.get(ds['type']), build_dataloader))
            _unknown(f'datasets.{phase}.', ds, known)
    for key, spec in opt.items():
        if str(key).startswith('network_') and spec is not None:
            for where, net_spec in _named_specs(key, spec, named=key.startswith('network_d')):
                if isinstance(net_spec, dict) and net_spec.get('type') in ARCH_REGISTRY:
                    _check_call_arguments(where, net_spec, ARCH_REGISTRY.get(net_spec['type']))
    train = opt.get('train') if is_train else None
    if isinstance(train, dict):
        for key, spec in train.items():
            if key.endswith('_opt') and isinstance(spec, dict):
                for where, loss_spec in _named_specs(f'train.{key}', spec, named=key == 'gan_opt'):
                    if isinstance(loss_spec, dict) and loss_spec.get('type') in LOSS_REGISTRY:
                        _check_call_arguments(where, loss_spec, LOSS_REGISTRY.get(loss_spec['type']))
            if key.startswith('optim_') and isinstance(spec, dict) and 'lr' in spec:
                if isinstance(spec['lr'], bool) or not isinstance(spec['lr'], (int, float)):
                    raise OptionError(f"train.{key}.lr: expected a number, got {spec['lr']!r}")
        total = train.get('total_iter')
        if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float)) or total <= 0):
            raise OptionError(f'train.total_iter: expected a positive number of iterations, got {total!r}')


def check_options(opt, is_train, resuming=False):
    """Validate resolved options before BasicSR builds anything.

    Checks ``model_type``, every ``network_*.type``, dataset types and folders, loss and metric types,
    pretrained paths (unless resuming) and ``num_gpu`` against the machine.

    Raises:
        OptionError: naming the first bad key and value.
    """
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    for key in ('name', 'model_type', 'datasets'):
        if key not in opt:
            raise OptionError(f"missing required option '{key}'")
    if 'num_gpu' not in opt:
        raise OptionError("missing required option 'num_gpu' (use 0 for CPU or 'auto')")
    model_type = opt['model_type']
    if not isinstance(model_type, str) or not _registry_lookup(MODEL_REGISTRY, model_type):
        close = difflib.get_close_matches(str(model_type), list(MODEL_REGISTRY.keys()), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise OptionError(f'model_type: unknown model {model_type!r}{hint}')
    num_gpu = opt['num_gpu']
    if num_gpu != 'auto' and (not isinstance(num_gpu, int) or num_gpu < 0):
        raise OptionError(f"num_gpu: expected a non-negative integer or 'auto', got {num_gpu!r}")
    if isinstance(num_gpu, int) and num_gpu > torch.cuda.device_count():
        raise OptionError(f'num_gpu: {num_gpu} requested but this machine has {torch.cuda.device_count()} '
                          "CUDA devices (use 0 for CPU or 'auto')")

    for key, spec in opt.items():
        if key.startswith('network_') and spec is not None:
            for where, net_spec in _named_specs(key, spec, named=key == 'network_d'):
                _check_type(ARCH_REGISTRY, 'arch', f'{where}.type', net_spec)
                _check_file_keys(where, net_spec)

    if not isinstance(opt['datasets'], dict) or not opt['datasets']:
        raise OptionError('datasets: expected a mapping of phases (train, val, test_1, ...)')
    for phase, ds in opt['datasets'].items():
        _check_type(DATASET_REGISTRY, 'dataset', f'datasets.{phase}.type', ds)
        for dkey, value in ds.items():
            is_path = dkey.startswith('dataroot') or dkey == 'meta_info_file' or dkey.startswith('meta_info')
            if is_path and isinstance(value, str):
                values = [value]
            elif is_path and isinstance(value, list):
                values = [v for v in value if isinstance(v, str)]
            else:
                continue
            for v in values:
                if not osp.exists(osp.expanduser(v)):
                    raise OptionError(f'datasets.{phase}.{dkey}: path does not exist: {v}')

    if is_train and isinstance(opt.get('train'), dict):
        for key, spec in opt['train'].items():
            if key.endswith('_opt') and isinstance(spec, dict):
                # gan_opt may give one loss per named discriminator
                for where, loss_spec in _named_specs(f'train.{key}', spec, named=key == 'gan_opt'):
                    if 'type' in loss_spec:
                        _check_type(LOSS_REGISTRY, 'loss', f'{where}.type', loss_spec)
                        _check_file_keys(where, loss_spec)
    val = opt.get('val')
    if isinstance(val, dict) and isinstance(val.get('metrics'), dict):
        for name, spec in val['metrics'].items():
            _check_type(METRIC_REGISTRY, 'metric', f'val.metrics.{name}.type', spec)

    if not resuming:
        for key, value in (opt.get('path') or {}).items():
            if key.startswith('pretrain_network') and value is not None:
                if not isinstance(value, str) or not osp.isfile(osp.expanduser(value)):
                    raise OptionError(f'path.{key}: pretrained file not found: {value}')
    state = (opt.get('path') or {}).get('resume_state')
    if state is not None and not osp.isfile(osp.expanduser(str(state))):
        raise OptionError(f'path.resume_state: training state not found: {state}')
    check_known_keys(opt, is_train)
    return opt
