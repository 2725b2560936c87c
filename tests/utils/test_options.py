"""utils/options.py: _base_ inheritance and option-file variables, --force_yml, up-front checks; every shipped
option file resolves and builds its networks."""
import functools
import glob
import json
import os
import re
from os import path as osp

import pytest
import torch
import yaml
from helpers import REPO

from basicsr_sinca.utils.options import OptionError, apply_force_yml, check_options, load_options

OPTIONS = osp.join(REPO, 'options')


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_base_chain_variables_and_floats(tmp_path):
    _write(tmp_path / 'stage.yml', 'network_g: {type: X, bottleneck: {type: sinca, num_layers: 9}, a: 1}\n'
           'train: {lr: 1e-4}\n')
    _write(tmp_path / 'piece.yml', '_bottleneck_: {_delete_: true, type: index, dim_embd: 64}\n')
    leaf = _write(tmp_path / 'leaf.yml', "_base_: [./stage.yml, ./piece.yml]\nname: leaf\n"
                  'network_g:\n  bottleneck: {{_base_._bottleneck_}}\n')
    opt = load_options(leaf)
    assert opt == {'network_g': {'type': 'X', 'bottleneck': {'type': 'index', 'dim_embd': 64}, 'a': 1},
                   'train': {'lr': 1e-4}, 'name': 'leaf'}  # variables and _base_ gone, 1e-4 a float


def test_bad_option_files(tmp_path):
    with pytest.raises(OptionError, match='option file not found'):
        load_options(str(tmp_path / 'none.yml'))
    with pytest.raises(OptionError, match='_base_ file not found'):
        load_options(_write(tmp_path / 'a.yml', '_base_: ./missing.yml\nname: a\n'))
    with pytest.raises(OptionError, match=r'b.yml: invalid YAML \(line 3, column 1\)'):
        load_options(_write(tmp_path / 'b.yml', 'name: b\ntrain: [1, 2\n'))


def test_force_yml():
    opt = {'train': {'optim_g': {'lr': 1.0}}}
    apply_force_yml(opt, ['train:optim_g:lr=2e-4', 'train:ema_decay=0.9', 'name=x'])
    assert opt == {'train': {'optim_g': {'lr': 2e-4}, 'ema_decay': 0.9}, 'name': 'x'}
    with pytest.raises(OptionError, match="expected 'key:subkey=value'"):
        apply_force_yml(opt, ['train:lr'])
    with pytest.raises(OptionError, match="'val' is not a mapping"):
        apply_force_yml(opt, ['val:metrics:psnr=1'])


def test_check_options_suggests_names(tmp_path):
    import basicsr_sinca  # noqa: F401
    opt = {'name': 'x', 'model_type': 'CodeFormerStage2Modle', 'num_gpu': 0,
           'datasets': {'train': {'type': 'FFHQBlindDataset', 'dataroot_gt': str(tmp_path)}},
           'network_g': {'type': 'SinCACodeFormer'}}
    with pytest.raises(OptionError, match="model_type: unknown model 'CodeFormerStage2Modle'; did you mean "
                                          "'CodeFormerStage2Model'"):
        check_options(opt, is_train=True)
    opt['model_type'] = 'VQRestorationModel'
    opt['network_g']['type'] = 'SinCACodeFormr'
    with pytest.raises(OptionError, match="network_g.type: unknown arch 'SinCACodeFormr'; did you mean 'SinCACodeF"):
        check_options(opt, is_train=True)
    opt['network_g']['type'] = 'SinCACodeFormer'
    # several named discriminators and their losses are checked one by one
    opt['network_d'] = {'global': {'type': 'StyleGAN2DiscriminatorPt'}, 'local': {'type': 'VQGANDiscriminator'}}
    with pytest.raises(OptionError, match="network_d.global.type: unknown arch 'StyleGAN2DiscriminatorPt'; did you "
                                          "mean 'StyleGAN2DiscriminatorPT'"):
        check_options(opt, is_train=True)
    opt['network_d']['global']['type'] = 'StyleGAN2DiscriminatorPT'
    opt['train'] = {'gan_opt': {'global': {'type': 'GANLos'}, 'local': {'type': 'GANLoss'}}}
    with pytest.raises(OptionError, match="train.gan_opt.global.type: unknown loss 'GANLos'"):
        check_options(opt, is_train=True)
    del opt['network_d'], opt['train']
    opt['path'] = {'pretrain_network_hq': str(tmp_path / 'prior.pth')}
    with pytest.raises(OptionError, match='path.pretrain_network_hq: pretrained file not found'):
        check_options(opt, is_train=True)


def _shipped():
    return sorted(f for f in glob.glob(osp.join(OPTIONS, '**', '*.yml'), recursive=True) if '/_base_/' not in f)


@functools.lru_cache(maxsize=None)
def _shipped_networks():
    """Every shipped file resolved, and each distinct network_g / network_d / network_hq built once on the meta device
    (shapes only, no memory): ``({file: (opt, {key: [spec text]})}, {spec text: network})``."""
    import basicsr_sinca  # noqa: F401
    from basicsr.archs import build_network
    files, nets = {}, {}
    for f in _shipped():
        opt = load_options(f)
        keys = {}
        for key in ('network_g', 'network_d', 'network_hq'):
            if opt.get(key):  # network_d may name several discriminators
                for net_opt in (opt[key].values() if 'type' not in opt[key] else [opt[key]]):
                    spec = {k: v for k, v in net_opt.items() if not k.endswith(('_path', '_paths'))}  # weight files
                    keys.setdefault(key, []).append(json.dumps(spec, sort_keys=True))
        for text in (t for ts in keys.values() for t in ts if t not in nets):
            with torch.device('meta'):
                nets[text] = build_network(json.loads(text))
        files[f] = (opt, keys)
    return files, nets


def test_every_shipped_option_file_resolves_and_builds():
    """Each file resolves and names a registered model; each distinct network_g / network_d / network_hq builds with
    its bottleneck(s)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    files, nets = _shipped_networks()
    assert len(files) >= 40
    for f, (opt, keys) in files.items():
        if not f.endswith('_common.yml'):  # the quickstart's shared bases (no model)
            assert MODEL_REGISTRY.get(opt['model_type']), f
            assert 'network_g' in keys, f
        for text in (t for ts in keys.values() for t in ts):
            assert sum(p.numel() for p in nets[text].parameters()) > 0, (f, text)


def _base_list(path):
    """The ``_base_`` files of an option file, as absolute paths (read from its ``_base_:`` line)."""
    line = re.search(r'^_base_:.*$', open(path, encoding='utf-8').read(), re.M)
    bases = yaml.safe_load(line.group(0))['_base_'] if line else []
    return [osp.normpath(osp.join(osp.dirname(path), b)) for b in ([bases] if isinstance(bases, str) else bases)]


def test_every_base_fragment_is_inherited_or_works_as_documented_add_on(tmp_path):
    """Everything under options/ is resolved by a test: each ``_base_`` fragment is reached through the ``_base_``
    chain of a shipped file, or it is an optional validation add-on, which is used here exactly as its header says
    (added to the ``_base_`` list of each training file of its baseline, its two variables set) and must resolve with
    the validation set and pass the strict key check."""
    from basicsr_sinca.utils.options import check_known_keys
    fragments = {osp.normpath(f) for f in glob.glob(osp.join(OPTIONS, '_base_', '**', '*.yml'), recursive=True)}
    assert fragments
    reached, todo = set(), list(_shipped())
    while todo:
        for path in _base_list(todo.pop()):
            assert osp.isfile(path), path
            if path not in reached:
                reached.add(path)
                todo.append(path)
    add_ons = sorted(fragments - reached)
    assert [osp.basename(f) for f in add_ons] == ['val_celeba_test.yml', 'val_div2k.yml']
    for fragment in add_ons:
        var = osp.splitext(osp.basename(fragment))[0]
        use = f'datasets:\n  val: {{{{_base_._{var}_dataset_}}}}\nval: {{{{_base_._{var}_}}}}\n'
        documented = '\n'.join('#   ' + line for line in use.splitlines())
        assert documented in open(fragment, encoding='utf-8').read(), fragment  # the header says this use
        trains = sorted(glob.glob(osp.join(OPTIONS, 'train', osp.basename(osp.dirname(fragment)), '*.yml')))
        assert len(trains) >= 10, fragment
        for train in trains:
            text = open(train, encoding='utf-8').read()
            bases = ', '.join(_base_list(train) + [fragment])
            text = re.sub(r'^_base_:.*$', lambda m: f'_base_: [{bases}]', text, count=1, flags=re.M) + '\n' + use
            opt = load_options(_write(tmp_path / osp.basename(train), text))
            assert opt['datasets']['val']['type'] == 'PairedImageDataset' and opt['datasets']['train'], train
            assert opt['val']['metrics'] and not any(k.startswith('_') for k in opt), train
            check_known_keys(opt, is_train=True)


def test_every_restoration_option_file_keeps_its_codebooks_frozen():
    """Every shipped restoration stage (a VQRestorationModel) trains with frozen codebooks, and its teacher (network_hq,
    or the network's own prior_config) builds with the very codebook shapes of the network."""
    from basicsr.archs import build_network
    from basicsr.utils.registry import MODEL_REGISTRY

    from basicsr_sinca.models.restoration_model import VQRestorationModel
    files, nets = _shipped_networks()
    checked = 0
    for f, (opt, keys) in files.items():
        model = MODEL_REGISTRY.get(opt['model_type']) if 'model_type' in opt else None
        if model is None or not issubclass(model, VQRestorationModel) or f'{os.sep}test{os.sep}' in f:
            continue
        net = nets[keys['network_g'][0]]
        assert net.codebooks and not any(c.requires_grad for c in net.codebooks), f
        config = opt.get('network_hq') or net.prior_config()
        if config is not None:
            with torch.device('meta'):
                prior = build_network(dict(config))
            assert [c.shape for c in prior.codebooks] == [c.shape for c in net.codebooks], f
        checked += 1
    assert checked >= 40


def test_entry_files_are_the_main_sinca_stages():
    """Each baseline's entry file trains its SinCA stage, and its teacher is defined: a prior file, or the prior is
    part of the network."""
    import basicsr_sinca  # noqa: F401
    from basicsr.archs import build_network
    entries = {'codeformer_sinca.yml': 'CodeFormerStage2Model', 'femasr_sinca.yml': 'FeMaSRLQModel',
               'daefr_sinca.yml': 'VQRestorationModel', 'adacode_sinca.yml': 'AdaCodeLQModel',
               'restoreformer_sinca.yml': 'VQRestorationModel', 'vqfr_sinca.yml': 'VQRestorationModel'}
    assert {osp.basename(f) for f in glob.glob(osp.join(OPTIONS, '*.yml'))} == set(entries)
    for name, expected in entries.items():
        opt = load_options(osp.join(OPTIONS, name))
        specs = opt['network_g']['bottleneck']
        assert opt['model_type'] == expected, name
        assert all(s['type'] == 'sinca' for s in (specs if isinstance(specs, list) else [specs])), name
        with torch.device('meta'):
            net = build_network({k: v for k, v in opt['network_g'].items() if not k.endswith(('_path', '_paths'))})
        assert (net.prior_config() is None) != bool(opt['path'].get('pretrain_network_hq')), name


def test_every_shipped_option_file_has_only_keys_something_reads():
    """Strict keys: every shipped option file passes the unknown-key check (train files as train, test files as
    test); and the check catches typos in dataset and network arguments of a real file."""
    import basicsr_sinca  # noqa: F401
    from basicsr_sinca.utils.options import check_known_keys
    for f in _shipped():
        if f.endswith('_common.yml'):  # the quickstart's shared bases (no model)
            continue
        check_known_keys(load_options(f), is_train=f'{os.sep}test{os.sep}' not in f)
    opt = load_options(osp.join(OPTIONS, 'train', 'codeformer', 'tiny', 'stage3_sinca.yml'))
    check_known_keys(opt, True)  # blur_sigma_large is read (as blur_sigma + '_large')
    opt['datasets']['train']['blur_sgima'] = [1, 2]
    with pytest.raises(OptionError, match=r"datasets.train.blur_sgima: unknown option \(nothing reads it\); did you "
                       r"mean 'datasets.train.blur_sigma'\?"):
        check_known_keys(opt, True)
    del opt['datasets']['train']['blur_sgima']
    opt['network_g']['codebok_size'] = 64
    with pytest.raises(OptionError, match="did you mean 'network_g.codebook_size'"):
        check_known_keys(opt, True)
