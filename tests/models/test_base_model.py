"""The model bases (models/base.py, models/restoration_model.py) in this process, on the test-only two-codebook
restorer: per-codebook code losses against hand computations, EMA of trained parameters only, the GAN/discriminator
gating, the teacher's set-up and the option errors."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers import TOY_BOTTLENECKS, make_toy_workdir, model_from_options, toy_options

from basicsr_sinca.utils.options import OptionError

TOY_SINCA = [TOY_BOTTLENECKS[0], TOY_BOTTLENECKS[0]]


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_models')
    make_toy_workdir(str(root))
    return root


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, 64, 64, generator=g)
    return {'lq': (gt + 0.1 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1), 'gt': gt}


def test_code_losses_per_codebook_match_hand_computation(root):
    bottlenecks = [{'type': 'sinca', 'num_layers': 1, 'num_heads': 4},
                   {'type': 'sinca_index', 'num_layers': 1, 'num_heads': 4}]
    model = model_from_options(toy_options(root, 'losses', bottlenecks, train={
        'ce_opt': {'type': 'CodeCrossEntropyLoss', 'loss_weight': 0.5}}), root)
    data = _batch()
    model.feed_data(data)
    targets = model.prior_targets(model.gt)
    output = model.net_g(model.lq, code_only=True)
    loss_dict = OrderedDict()
    total = model.code_losses(output, targets, loss_dict)
    (z0, z1), (o0, o1) = output.latents, output.bottlenecks
    expected = {
        'l_feat_match_c0': F.mse_loss(o0.feat, targets[0].feat),  # continuous: Eq. 6, first term
        'l_feat_lq_c0': F.mse_loss(z0, targets[0].feat),
        'l_feat_lq_c1': F.mse_loss(z1, targets[1].feat),
        'l_ce_c1': 0.5 * F.cross_entropy(o1.logits.reshape(-1, 40), targets[1].indices.reshape(-1)),
        'code_acc_c1': (o1.logits.argmax(-1) == targets[1].indices.flatten(1)).float().mean(),
    }
    assert list(loss_dict) == list(expected)  # no feature-matching term for the index bottleneck
    for key, value in expected.items():
        assert torch.allclose(loss_dict[key], value), key
    summed = sum(v for k, v in expected.items() if not k.startswith('code_acc'))
    assert torch.allclose(total, summed)
    # the prior's targets are the nearest codes of the frozen prior's latents on the GT, not the LQ
    with torch.no_grad():
        gt_latents = model.prior.encode_hq(model.gt)
    assert torch.equal(targets[1].indices, torch.cdist(
        gt_latents[1].permute(0, 2, 3, 1).reshape(-1, 24), model.prior.codebooks[1]).argmin(1).reshape(2, 8, 8))


def test_one_step_trains_only_unfrozen_parameters_and_ema_keeps_frozen_bits(root):
    model = model_from_options(toy_options(root, 'ema'), root)
    frozen = {k: v.clone() for k, v in model.net_g.state_dict().items() if k.startswith(('codebook', 'decoder',
                                                                                           'from_latent'))}
    encoder = model.net_g.encoder[0].weight.clone()
    for it in range(1, 4):
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
    assert {'l_feat_match_c0', 'l_feat_lq_c0', 'l_feat_lq_c1', 'l_pix'} <= set(model.log_dict)
    assert 'l_feat_match_c1' not in model.log_dict  # nearest: nothing continuous to match
    for net in (model.net_g, model.net_g_ema):
        sd = net.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in frozen.items())
    assert not torch.equal(model.net_g.encoder[0].weight, encoder)
    ema = model.net_g_ema.encoder[0].weight
    assert not torch.equal(ema, encoder) and not torch.equal(ema, model.net_g.encoder[0].weight)


def test_gan_term_and_discriminator_steps_are_gated(root):
    opt = toy_options(root, 'gan', network_d={'type': 'VQGANDiscriminator', 'nc': 3, 'ndf': 32, 'n_layers': 2},
                      train={'optim_d': {'type': 'Adam', 'lr': 1e-4},
                             'gan_opt': {'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 0.1},
                             'net_d_start_iter': 2, 'net_d_iters': 2})
    model = model_from_options(opt, root)
    seen = {}
    for it in range(1, 7):
        d_before = model.net_d.main[0].weight.clone()
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
        seen[it] = ('l_g_gan' in model.log_dict, 'l_d_real' in model.log_dict,
                    not torch.equal(d_before, model.net_d.main[0].weight))
    assert seen == {1: (False, False, False), 2: (False, False, False), 3: (True, False, False),
                    4: (True, True, True), 5: (True, False, False), 6: (True, True, True)}


def test_discriminator_step_uses_only_its_own_iterations_gradients(root):
    """The discriminator's gradients are zeroed before every step (VQFR's StyleGAN2 step let them accumulate): at the
    second step they equal the hinge loss's gradients on that step's (real, fake) pair, recomputed on a copy of the
    discriminator as it was."""
    import copy
    opt = toy_options(root, 'dgrad', network_d={'type': 'VQGANDiscriminator', 'nc': 3, 'ndf': 16, 'n_layers': 2},
                      train={'optim_d': {'type': 'SGD', 'lr': 1e-3},
                             'gan_opt': {'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 0.1}})
    model = model_from_options(opt, root)
    recorded = []
    real_step = model.optimizer_d.step

    def recording_step(*args, **kwargs):
        recorded.append(([p.grad.clone() for p in model.net_d.parameters()], copy.deepcopy(model.net_d),
                         [(real.detach().clone(), fake.detach().clone()) for real, fake, _, _ in model.d_steps]))
        return real_step(*args, **kwargs)

    model.optimizer_d.step = recording_step
    for it in (1, 2):
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
    assert len(recorded) == 2
    grads, net_d, pairs = recorded[1]
    (real, fake), = pairs
    loss = F.relu(1 - net_d(real)).mean() + F.relu(1 + net_d(fake)).mean()
    expected = torch.autograd.grad(loss, list(net_d.parameters()))
    assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-7) for g, e in zip(grads, expected))
    assert not all(torch.allclose(g, e + f, rtol=1e-4, atol=1e-7) for g, e, f in zip(grads, expected, recorded[0][0]))


def test_adaptive_gan_weight_is_clamped_ratio_of_gradients():
    from basicsr_sinca.models.base import SinCABaseModel
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    recon, gan = (3 * w).sum(), (w ** 2).sum()  # gradients (3, 3) and (2, 4)
    expected = torch.tensor(18.0).sqrt() / (torch.tensor(20.0).sqrt() + 1e-4)
    assert torch.allclose(SinCABaseModel.adaptive_gan_weight(recon, gan, w), expected)
    assert SinCABaseModel.adaptive_gan_weight(10 * recon, gan, w) == 1.0  # clamped


@pytest.mark.parametrize('change, message', [
    ({'path': {'pretrain_network_hq': None}}, 'path.pretrain_network_hq: the targets of ToyRestorer come from'),
    ({'path': {'pretrain_network_vqgan': 'x.pth'}}, 'path.pretrain_network_vqgan: renamed to path.pretrain_network_hq'),
    ({'network_vqgan': {'type': 'ToyPrior'}}, 'network_vqgan: renamed to network_hq'),
    ({'train': {'net_d_init_iters': 0}}, 'train.net_d_init_iters: renamed to train.net_d_start_iter'),
    ({'network_hq': {'type': 'SinCATransformer', 'dim': 16}}, 'network_hq.type: SinCATransformer is not an HQ prior'),
])
def test_option_errors_name_the_key(root, change, message):
    with pytest.raises(OptionError, match=message.replace('(', r'\(')):
        model_from_options(toy_options(root, 'bad', **change), root)


@pytest.mark.parametrize('network, message', [
    ({'type': 'SinCATransformer', 'dim': 16}, 'network_g.type: SinCATransformer does not implement the restorer'),
    ({'type': 'CodeFormer', 'n_layers': 1, 'dim_embd': 32, 'connect_list': ['32']},
     'network_g.type: CodeFormer keeps the upstream forward'),
])
def test_networks_off_the_contract_are_refused(root, network, message):
    opt = toy_options(root, 'refused')
    opt['network_g'] = network
    opt['path']['pretrain_network_g'] = None
    with pytest.raises(OptionError, match=message):
        model_from_options(opt, root)


def test_lr_multipliers_make_parameter_groups(root):
    model = model_from_options(toy_options(root, 'groups', train={'lr_multipliers': {'bottleneck': 10}}), root)
    groups = model.optimizer_g.param_groups
    assert sorted(g['lr'] for g in groups) == [1e-3, 1e-2]
    fast = next(g for g in groups if g['lr'] == 1e-2)
    names = {id(p): n for n, p in model.net_g.named_parameters()}
    assert fast['params'] and all(names[id(p)].startswith('bottleneck.') for p in fast['params'])
    total = sum(len(g['params']) for g in groups)
    assert total == sum(1 for p in model.net_g.parameters() if p.requires_grad)


def test_codebook_commitment_to_the_selected_codes(root):
    """``codebook_target: selected`` (RestoreFormer's commitment) pulls each latent toward the codes its own
    bottleneck picked, not toward the prior's targets; it needs bottlenecks that select codes."""
    opt = toy_options(root, 'commit', ['nearest', 'nearest'], train={
        'codebook_opt': {'type': 'MSELoss', 'loss_weight': 1.0}, 'codebook_target': 'selected'})
    model = model_from_options(opt, root)
    with torch.no_grad():  # latents on the codebooks' scale: the network's own codes spread and differ from the prior's
        for conv in model.net_g.to_latent:
            conv.weight.mul_(30)
    model.feed_data(_batch())
    output = model.net_g(model.lq, code_only=True)
    loss_dict = OrderedDict()
    targets = model.prior_targets(model.gt)
    model.code_losses(output, targets, loss_dict)
    for i, (z, out, target) in enumerate(zip(output.latents, output.bottlenecks, targets)):
        own = model.net_g.codebooks[i][out.indices].permute(0, 3, 1, 2)
        assert not torch.equal(out.indices, target.indices) and len(out.indices.unique()) > 1
        assert torch.allclose(loss_dict[f'l_feat_lq_c{i}'], F.mse_loss(z, own))
        assert not torch.allclose(F.mse_loss(z, own), F.mse_loss(z, target.feat))
    opt['network_g']['bottleneck'] = TOY_SINCA
    with pytest.raises(OptionError, match="'selected' needs bottlenecks that select codes, not 'sinca'"):
        model = model_from_options(opt, root)
        model.feed_data(_batch())
        model.code_losses(model.net_g(model.lq, code_only=True), model.prior_targets(model.gt), OrderedDict())


def test_adaptive_gan_weight_on_the_restorer(root):
    """``adaptive_gan_weight``: VQGAN's weight at the network's decoder_last_layer times ``disc_weight``."""
    opt = toy_options(root, 'adaptive', network_d={'type': 'VQGANDiscriminator', 'nc': 3, 'ndf': 32, 'n_layers': 2},
                      train={'optim_d': {'type': 'Adam', 'lr': 1e-4},
                             'gan_opt': {'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 1.0},
                             'adaptive_gan_weight': True, 'disc_weight': 0.5})
    model = model_from_options(opt, root)
    model.net_g.decoder[2].weight.requires_grad = True  # the toy's frozen decoder: give the weight a gradient
    type(model.net_g).decoder_last_layer = property(lambda self: self.decoder[2].weight)
    try:
        model.feed_data(_batch())
        model.optimize_parameters(1)
    finally:
        del type(model.net_g).decoder_last_layer
    assert 0 < float(model.log_dict['d_weight']) <= 0.5


def test_param_groups_give_their_own_optimizer_arguments(root):
    groups_opt = [{'match': ['bottleneck'], 'lr': 2e-5, 'betas': [0.5, 0.9]}]
    model = model_from_options(toy_options(root, 'param_groups', train={'param_groups': groups_opt}), root)
    names = {id(p): n for n, p in model.net_g.named_parameters()}
    default, special = model.optimizer_g.param_groups
    assert special['lr'] == 2e-5 and tuple(special['betas']) == (0.5, 0.9)
    assert default['lr'] == 1e-3 and tuple(default['betas']) == (0.9, 0.99)
    assert all(names[id(p)].startswith('bottleneck.') for p in special['params'])
    assert not any(names[id(p)].startswith('bottleneck.') for p in default['params'])
    with pytest.raises(OptionError, match=r"train.param_groups\[0\].match: \['botleneck'\] matches no trained"):
        model_from_options(toy_options(root, 'bad_groups', train={'param_groups': [{'match': ['botleneck']}]}), root)


def _two_discriminators(root, name, **train):
    patch = {'type': 'VQGANDiscriminator', 'nc': 3, 'ndf': 32, 'n_layers': 2}
    return toy_options(root, name, network_d={'global': patch, 'local': patch},
                       train=dict({'optim_d': {'type': 'Adam', 'lr': 1e-4},
                                   'gan_opt': {'global': {'type': 'GANLoss', 'gan_type': 'wgan_softplus'},
                                               'local': {'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 0.5}},
                                   'gan_branches': {'global': {'r1_weight': 10, 'r1_every': 2},
                                                    'local': {'start_iter': 2}}}, **train))


def test_named_discriminators_with_own_losses_start_and_r1(root):
    model = model_from_options(_two_discriminators(root, 'two_d'), root)
    assert {k.split('.')[0] for k in model.net_d.state_dict()} == {'global', 'local'}
    assert model.gan_loss('global').gan_type == 'wgan_softplus' and model.gan_loss('local').loss_weight == 0.5
    logged = {}
    for it in range(1, 5):
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
        logged[it] = {k for k in model.log_dict if k.startswith(('l_g_gan', 'l_d_r1', 'l_d_real'))}
    assert logged[1] == {'l_g_gan_global', 'l_d_real_global'}  # local starts after iteration 2
    assert logged[2] == {'l_g_gan_global', 'l_d_real_global', 'l_d_r1_global'}  # lazy R1 every 2 iterations
    assert logged[3] == {'l_g_gan_global', 'l_d_real_global', 'l_g_gan_local', 'l_d_real_local'}
    assert logged[4] == logged[3] | {'l_d_r1_global'}
    assert model.log_dict['l_d_r1_global'] >= 0


@pytest.mark.parametrize('train, message', [
    ({'gan_branches': {'globl': {}}}, r"train.gan_branches.globl: no such discriminator in network_d \(\['global'"),
    ({'gan_branches': {'global': {'r1_wieght': 1}}}, r"train.gan_branches.global: unknown keys \['r1_wieght'\]"),
    ({'gan_opt': {'global': {'type': 'GANLoss', 'gan_type': 'hinge'}}}, 'train.gan_opt: losses for'),
])
def test_named_discriminator_option_errors(root, train, message):
    with pytest.raises(OptionError, match=message):
        model_from_options(_two_discriminators(root, 'bad_d', **train), root)


def test_checkpoint_writes_are_atomic_and_resume_checks_counts(root, monkeypatch):
    """The base model's own saves (whichever entry point runs it): a save that fails half-way leaves the previous
    file as it was and no temporary file; a state of another optimizer count is refused by name."""
    import os

    from basicsr_sinca.utils.checkpoint import load_untrusted
    model = model_from_options(toy_options(root, 'atomic', TOY_SINCA), root)
    model.feed_data(_batch())
    model.optimize_parameters(1)
    model.save(0, 1)
    models, states = model.opt['path']['models'], model.opt['path']['training_states']
    before = {p: open(p, 'rb').read() for p in (os.path.join(models, 'net_g_1.pth'), os.path.join(states, '1.state'))}

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        raise OSError('No space left on device')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='No space left'):
        model.save_network(model.net_g, 'net_g', 1)
    with pytest.raises(OSError, match='No space left'):
        model.save_training_state(0, 1)
    monkeypatch.undo()
    assert {p: open(p, 'rb').read() for p in before} == before
    assert sorted(os.listdir(models)) == ['net_g_1.pth'] and sorted(os.listdir(states)) == ['1.state']

    state = load_untrusted(os.path.join(states, '1.state'))
    fresh = model_from_options(toy_options(root, 'atomic_resume', TOY_SINCA), root)
    fresh.resume_training(state)
    saved = state['optimizers'][0]['state']
    assert saved and all(torch.equal(fresh.optimizers[0].state_dict()['state'][k]['exp_avg'], v['exp_avg'])
                         for k, v in saved.items())
    state['optimizers'].append(state['optimizers'][0])
    with pytest.raises(ValueError, match='the state holds 2 optimizers, this model has 1'):
        fresh.resume_training(state)
