"""FaceRestorationModel on the toy restorer: component discriminators on RoI crops (GAN + Gram style terms, own
step and optimizer, start iteration), the ArcFace identity loss, saving, and the option errors."""
import json
import os

import pytest
import torch
from helpers import make_toy_workdir, model_from_options, toy_options

from basicsr_sinca.utils.options import OptionError

COMPONENT_OPT = {'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 1.5}, 'style_weight': 2000,
                 'start_iter': 1}


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('face_model')
    make_toy_workdir(str(root))
    faces = root / 'datasets' / 'toy_faces'
    marks = {os.path.splitext(f)[0]: {'left_eye': [200, 250, 20], 'right_eye': [312, 250, 20], 'mouth': [256, 380, 40]}
             for f in os.listdir(faces)}
    (root / 'landmarks.json').write_text(json.dumps(marks))
    return root


def _options(root, name, **overrides):
    train_set = {'crop_components': True, 'component_path': str(root / 'landmarks.json')}
    opt = toy_options(root, name, model_type='FaceRestorationModel',
                      network_d_component={'type': 'ComponentDiscriminator'}, datasets={'train': train_set},
                      train={'component_opt': COMPONENT_OPT, 'optim_component': {'type': 'Adam', 'lr': 1e-3},
                             'identity_opt': {'type': 'ArcFaceIdentityLoss', 'loss_weight': 3, 'random_weights': True}})
    opt.update(overrides)
    return opt


def _batch(opt):
    from basicsr.data import build_dataset
    ds = build_dataset(dict(opt['datasets']['train'], phase='train'))
    items = [ds[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(items[0][k])}


def test_component_and_identity_terms(root):
    from basicsr_sinca.models.face_model import gram_matrix
    opt = _options(root, 'face')
    model = model_from_options(opt, root)
    batch = _batch(opt)
    assert model.component_sizes == {'left_eye': 10, 'right_eye': 10, 'mouth': 15}  # 80 / 120 at 512, here 64 px
    d_before = {k: v.clone() for k, v in model.net_d_component.state_dict().items()}
    model.feed_data(batch)
    model.optimize_parameters(1)  # components start after iteration 1
    assert 'l_identity' in model.log_dict and 'l_g_mouth' not in model.log_dict
    assert all(torch.equal(v, model.net_d_component.state_dict()[k]) for k, v in d_before.items())
    model.optimize_parameters(2)
    logged = set(model.log_dict)
    for c in ('left_eye', 'right_eye', 'mouth'):
        assert {f'l_g_{c}', f'l_g_style_{c}', f'l_d_{c}'} <= logged, c
    changed = [k for k, v in d_before.items() if not torch.equal(v, model.net_d_component.state_dict()[k])]
    assert {k.split('.')[0] for k in changed} == {'left_eye', 'right_eye', 'mouth'}
    # the crops are the boxes' contents: a box covering the whole image gives the resized image
    model.component_locs = {c: torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2) for c in model.component_locs}
    crops = model.component_crops(model.gt)
    whole = torch.nn.functional.interpolate(model.gt, size=(15, 15), mode='area')
    assert crops['mouth'].shape == (2, 3, 15, 15) and (crops['mouth'] - whole).abs().mean() < 0.05
    f = torch.randn(2, 4, 3, 3)
    assert torch.allclose(gram_matrix(f)[1], f[1].reshape(4, 9) @ f[1].reshape(4, 9).t() / 36)


def test_component_discriminators_are_saved(root):
    model = model_from_options(_options(root, 'face_save'), root)
    for key in ('models', 'training_states'):
        os.makedirs(model.opt['path'][key], exist_ok=True)
    model.save(0, 3)
    path = os.path.join(model.opt['path']['models'], 'net_d_component_3.pth')
    saved = torch.load(path, map_location='cpu', weights_only=True)['params']
    assert {k.split('.')[0] for k in saved} == {'left_eye', 'right_eye', 'mouth'}


@pytest.mark.parametrize('change, message', [
    ({'train': {'component_opt': dict(COMPONENT_OPT, eye_sise=80)}},
     r"train.component_opt: unknown keys \['eye_sise'\]"),
    ({'train': {'optim_component': None}}, 'train.optim_component: the component discriminators need their'),
    ({'network_d_component': None}, 'train.component_opt: set network_d_component'),
])
def test_option_errors(root, change, message):
    opt = _options(root, 'face_bad')
    for key, value in change.items():
        if key == 'train':
            opt['train'].update(value)
        else:
            opt[key] = value
    with pytest.raises(OptionError, match=message):
        model_from_options(opt, root)


def test_missing_boxes_and_arcface_file(root):
    model = model_from_options(_options(root, 'face_boxes'), root)
    batch = _batch(_options(root, 'face_boxes'))
    model.feed_data({k: v for k, v in batch.items() if not k.startswith('loc_')})  # fine for validation
    with pytest.raises(OptionError, match='datasets.train.crop_components: the training batch has no component'):
        model.optimize_parameters(2)
    from basicsr_sinca.losses.identity_loss import ArcFaceIdentityLoss
    with pytest.raises(ValueError, match='model_path: put arcface_resnet18.pth'):
        ArcFaceIdentityLoss()
