"""The generic restoration stage: any network on the restorer contract, trained toward its HQ prior's targets.

:class:`VQRestorationModel` is the base of every baseline's restoration model (the teacher and the code losses
live here, once) and a registered model in its own right: a network that implements
:class:`~basicsr_sinca.archs.restorer_arch.VQRestorer` trains with ``model_type: VQRestorationModel`` and no
model code of its own.
"""
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.archs.bottleneck_arch import lookup_codes
from basicsr_sinca.archs.restorer_arch import VQRestorer, codebook_suffix
from basicsr_sinca.models.base import SinCABaseModel
from basicsr_sinca.utils.options import OptionError

__all__ = ['VQRestorationModel']


@MODEL_REGISTRY.register()
class VQRestorationModel(SinCABaseModel):
    """A restoration stage of any network on the restorer contract (:class:`VQRestorer`).

    Per iteration: the frozen HQ prior gives per-codebook targets on the GT (:meth:`prior_targets`); the network
    runs on the LQ image (code-only when no image loss is configured); the loss is the code losses of every
    codebook (:meth:`code_losses`) plus, on images, ``pixel_opt``, ``perceptual_opt`` and the GAN term.

    Options: ``path.pretrain_network_hq`` (the prior's checkpoint; ``path.param_key_hq``) and ``network_hq`` (its
    arch options, default: what the network says, ``prior_config()``); ``train.feat_opt`` (Eq. 6, default weights
    1/1), ``train.ce_opt`` (index bottlenecks), ``train.codebook_opt`` (a baseline's own encoder-feature loss,
    replacing Eq. 6's encoder term; ``train.codebook_target: selected`` compares the latent with the codes its own
    bottleneck selected, RestoreFormer's commitment, instead of the prior's targets); ``train.adaptive_gan_weight``
    (VQGAN's adaptive weight at the network's ``decoder_last_layer`` times ``train.disc_weight``);
    ``train.output_losses: {context key: {pixel_opt, perceptual_opt, style_opt}}`` (image losses on another output
    the network leaves in its decoding context, e.g. VQFR v1's texture image ``texture_dec``, logged with the key as
    suffix). Several discriminators (``network_d: {name: ...}``, ``train.gan_branches``; see
    :class:`SinCABaseModel`) each judge their ``output``, with the adaptive weight at that output's last layer
    (``output_last_layer``) when asked. ``val.decode_opt``: decoding options at validation / test.
    """

    def setup_stage(self):
        bare = self.get_bare_model(self.net_g)
        if not isinstance(bare, VQRestorer):
            raise OptionError(f"network_g.type: {self.opt['network_g']['type']} does not implement the restorer "
                              'contract (basicsr_sinca.archs.restorer_arch.VQRestorer)')
        if bare.official_forward:
            raise OptionError(f"network_g.type: {self.opt['network_g']['type']} keeps the upstream forward (for "
                              'loading and inference); train its contract twin instead (see its docstring)')
        self.setup_prior()
        self.setup_code_losses()

    def setup_prior(self):
        """The frozen HQ prior (teacher) of the network, from ``path.pretrain_network_hq`` / ``network_hq``."""
        path_opt = self.opt['path']
        path = path_opt.get('pretrain_network_hq')
        try:
            prior = self.get_bare_model(self.net_g).build_prior(path, self.opt.get('network_hq'),
                                                                 path_opt.get('param_key_hq'))
        except ValueError as err:
            raise OptionError(str(err)) from None
        self.prior = prior.to(self.device)
        get_root_logger().info(f'Targets from the frozen HQ prior {path or "(part of network_g)"}')

    def prior_targets(self, gt):
        """Per codebook :class:`PriorTarget` (z_hat, indices) of ``gt``; no gradient."""
        return self.prior.prior_targets(gt)

    def setup_code_losses(self):
        train_opt = self.opt['train']
        self.cri_feat = build_loss(train_opt.get('feat_opt') or {'type': 'FeatureMatchingLoss'}).to(self.device)
        self.cri_ce = build_loss(train_opt['ce_opt']).to(self.device) if train_opt.get('ce_opt') else None
        self.cri_codebook = (build_loss(train_opt['codebook_opt']).to(self.device)
                             if train_opt.get('codebook_opt') else None)
        self.codebook_target = train_opt.get('codebook_target', 'prior')
        if self.codebook_target not in ('prior', 'selected'):
            raise OptionError(f"train.codebook_target: expected 'prior' or 'selected', got {self.codebook_target!r}")
        self.adaptive_gan = bool(train_opt.get('adaptive_gan_weight', False))
        self.disc_weight = train_opt.get('disc_weight', 1.0)
        self.output_losses = {}
        for key, losses in (train_opt.get('output_losses') or {}).items():
            unknown = set(losses or {}) - {'pixel_opt', 'perceptual_opt', 'style_opt'}
            if unknown or not losses:
                raise OptionError(f'train.output_losses.{key}: expected some of pixel_opt, perceptual_opt, style_opt; '
                                  f'got {sorted(losses or {})}')
            self.output_losses[key] = {name: build_loss(o).to(self.device) for name, o in losses.items()}

    def code_losses(self, output, targets, loss_dict):
        """Losses of every codebook's bottleneck against the prior's targets, summed; each term logged per codebook
        (names get ``_c{i}`` when the network has several codebooks).

        * ``l_feat_match``: ||z_hat - z_t||^2, for bottlenecks with a ``continuous`` output (Eq. 6);
        * ``l_feat_lq``: the encoder term ||z_l - sg(z_hat)||^2 (Eq. 6), or ``codebook_opt`` when given;
        * ``l_ce`` (with ``ce_opt``) and the logged ``code_acc``, for bottlenecks that ``predicts_logits``.

        Args:
            output (RestorerOutput): The network's output.
            targets (list[PriorTarget]): :meth:`prior_targets` of the GT.
            loss_dict (OrderedDict): Receives the terms.

        Returns:
            Tensor: the sum.
        """
        bare = self.get_bare_model(self.net_g)
        bottlenecks, codebooks = bare.bottlenecks, bare.codebooks
        n = len(targets)
        total = 0
        for i, (lq_feat, out, bottleneck, target) in enumerate(zip(output.latents, output.bottlenecks, bottlenecks,
                                                                    targets)):
            sfx = codebook_suffix(i, n)
            l_match, l_lq = self.cri_feat(out.feat if bottleneck.continuous else None,
                                          None if self.cri_codebook else lq_feat, target.feat)
            if self.cri_codebook is not None:
                if self.codebook_target == 'selected' and not bottleneck.selects_codes:
                    raise OptionError(f"train.codebook_target: 'selected' needs bottlenecks that select codes, not "
                                      f'{bottleneck.type_name!r}')
                own = lookup_codes(out.indices, codebooks[i]) if self.codebook_target == 'selected' else None
                l_lq = self.cri_codebook(lq_feat, target.feat if own is None else own)
            for key, term in (('l_feat_match', l_match), ('l_feat_lq', l_lq)):
                if term is not None:
                    loss_dict[key + sfx] = term
                    total = total + term
            if bottleneck.predicts_logits:
                if self.cri_ce is not None:
                    loss_dict['l_ce' + sfx] = self.cri_ce(out.logits, target.indices)
                    total = total + loss_dict['l_ce' + sfx]
                hits = out.logits.detach().argmax(-1) == target.indices.flatten(1)
                loss_dict['code_acc' + sfx] = hits.float().mean()
        return total

    def generator_loss(self, current_iter, loss_dict):
        targets = self.prior_targets(self.gt)
        output = self.last_output = self.net_g(self.lq, code_only=not self.needs_image())
        total = self.code_losses(output, targets, loss_dict)
        if output.image is not None:
            self.output = output.image
            recon = self.image_losses(self.output, loss_dict)
            for key, losses in self.output_losses.items():
                recon = recon + self.context_image_losses(self.context_output(output, key), key, losses, loss_dict)
            total = total + recon + self.gan_terms(current_iter, output, recon, loss_dict)
        return total

    def needs_image(self):
        """Whether a training step decodes (some loss looks at images); code-only passes otherwise."""
        return (self.cri_pix is not None or self.cri_perceptual is not None or self.has_gan or
                bool(self.output_losses))

    @staticmethod
    def context_output(output, key):
        if key == 'image':
            return output.image
        if key not in output.context:
            raise OptionError(f"train: the network leaves no '{key}' in its decoding context "
                              f'(it has {sorted(output.context)})')
        return output.context[key]

    def context_image_losses(self, image, key, losses, loss_dict):
        total = 0
        for name, cri in losses.items():
            loss_dict[f"l_{name.split('_')[0]}_{key}"] = term = cri(image, self.gt)
            total = total + term
        return total

    def gan_terms(self, current_iter, output, recon, loss_dict):
        """The generator's GAN terms: one discriminator on the image, or each named one on its ``output``."""
        bare = self.get_bare_model(self.net_g)
        if not self.gan_branches:
            if self.adaptive_gan:
                return self.gan_generator_term(current_iter, self.output, loss_dict, recon, bare.decoder_last_layer,
                                               self.disc_weight)
            return self.gan_generator_term(current_iter, self.output, loss_dict)
        total = 0
        for name, settings in self.gan_branches.items():
            fake = self.context_output(output, settings['output'])
            adaptive = settings['adaptive_weight']
            total = total + self.gan_generator_term(
                current_iter, fake, loss_dict, recon, bare.output_last_layer(settings['output']) if adaptive else None,
                self.disc_weight if adaptive else 1.0, branch=name, suffix=f'_{name}')
        return total

    def test(self):
        """Restore ``lq``; ``val.decode_opt`` gives the network's decoding options (e.g. VQFR v2's
        ``fidelity_ratio``)."""
        decode_opt = dict((self.opt.get('val') or {}).get('decode_opt') or {})
        with self.evaluation_net() as net:
            try:
                self.output = net.restore(self.lq, **decode_opt).image
            except TypeError as err:
                raise OptionError(f'val.decode_opt: {sorted(decode_opt)} not taken by {type(net).__name__}.decode '
                                  f'({err})') from None
