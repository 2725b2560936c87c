"""utils/options.py: _base_ inheritance and option-file variables, --force_yml, up-front checks; every shipped
option file resolves and builds its networks."""
import glob
import os
import json
from os import path as osp

import pytest
import torch
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


def test_every_shipped_option_file_resolves_and_builds():
    """Each file resolves; each distinct network_g / network_d / network_hq builds (on the meta device: shapes
    only, no memory) with its bottleneck(s)."""
    import basicsr_sinca  # noqa: F401
    from basicsr.archs import build_network
    from basicsr.utils.registry import MODEL_REGISTRY
    files = _shipped()
    assert len(files) >= 40
    specs = {}
    for f in files:
        opt = load_options(f)
        if not f.endswith('_common.yml'):  # the quickstart's shared bases
            assert MODEL_REGISTRY.get(opt['model_type']), f
        for key in ('network_g', 'network_d', 'network_hq'):
            if opt.get(key):  # network_d may name several discriminators
                for net_opt in (opt[key].values() if 'type' not in opt[key] else [opt[key]]):
                    spec = {k: v for k, v in net_opt.items() if not k.endswith(('_path', '_paths'))}  # weight files
                    specs.setdefault(json.dumps(spec, sort_keys=True), f)
    for text, f in specs.items():
        with torch.device('meta'):
            net = build_network(json.loads(text))
        assert sum(p.numel() for p in net.parameters()) > 0, f


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
