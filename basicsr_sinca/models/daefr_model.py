"""DAEFR's association stage (stage 2). Images in [-1, 1].

DAEFR's codebook stage (stage 1) is :class:`VQPriorModel` on ``VQVAEGAN`` (``train.input_key: lq`` for the LQ
codebook) and its final stage is :class:`VQRestorationModel` on ``SinCADAEFR``: both need no model of their own.
"""
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.models.base import NamedDiscriminators
from basicsr_sinca.models.prior_model import VQPriorModel, code_perplexity

__all__ = ['DAEFRAssociationModel']

BRANCHES = ('hq', 'lq')


@MODEL_REGISTRY.register()
class DAEFRAssociationModel(VQPriorModel):
    """DAEFR stage 2 on ``DAEFRAssociation``: the HQ branch auto-encodes the GT, the LQ branch the degraded image
    (``lq``), each with the stage-1 losses of :class:`VQPriorModel` (L1, LPIPS, codebook, hinge GAN with the adaptive
    weight at its decoder's last layer and its own discriminator, logged with ``_hq`` / ``_lq``), plus
    ``association_weight`` (default 1) times the CLIP-style symmetric cross-entropy between the two branches'
    L2-normalised latents over the batch (``l_association``; image i of one branch should pick image i of the other).
    ``logit_scale`` is clamped to log(100), as CLIP does.
    """

    def setup_stage(self):
        train_opt = self.opt['train']
        self.codebook_loss_weight = train_opt.get('codebook_loss_weight', 1.0)
        self.disc_weight = train_opt.get('disc_weight', 0.8)
        self.association_weight = train_opt.get('association_weight', 1.0)
        self.restart_every = 0

    def build_discriminator(self):
        # one discriminator per branch (keys hq.*, lq.*), both from the one network_d
        return NamedDiscriminators({branch: build_network(self.opt['network_d']) for branch in BRANCHES})

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = data['lq'].to(self.device)

    def generator_loss(self, current_iter, loss_dict):
        bare = self.get_bare_model(self.net_g)
        outputs = dict(zip(BRANCHES, self.net_g(self.gt, self.lq)))
        total, self.code_indices, latents = 0, {}, {}
        for branch, real, autoencoder in (('hq', self.gt, bare.vqvae), ('lq', self.lq, bare.vqvae_LQ)):
            image, l_codebook, self.code_indices[branch] = autoencoder.autoencoder_terms(outputs[branch])
            latents[branch] = outputs[branch][4]  # h: the latent before quantisation
            if branch == 'hq':
                self.output = image
            sfx = f'_{branch}'
            loss_dict['l_codebook' + sfx] = l_codebook * self.codebook_loss_weight
            recon = self.image_losses(image, loss_dict, 'l_pix' + sfx, 'l_percep' + sfx, target=real)
            total = total + recon + loss_dict['l_codebook' + sfx] + self.gan_generator_term(
                current_iter, image, loss_dict, recon, autoencoder.decoder_last_layer, self.disc_weight, real=real,
                branch=branch, suffix=sfx)
        logits = bare.association_logits(latents['hq'], latents['lq'])
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss_dict['l_association'] = self.association_weight * 0.5 * (F.cross_entropy(logits, labels) +
                                                                      F.cross_entropy(logits.t(), labels))
        loss_dict['association_acc'] = (logits.detach().argmax(1) == labels).float().mean()
        return total + loss_dict['l_association']

    def after_generator_step(self, current_iter, loss_dict):
        bare = self.get_bare_model(self.net_g)
        with torch.no_grad():
            bare.logit_scale.clamp_(max=torch.log(torch.tensor(100.0)).item())
        loss_dict['logit_scale'] = bare.logit_scale.detach().clone()
        for branch, autoencoder in (('hq', bare.vqvae), ('lq', bare.vqvae_LQ)):
            (indices, ), (codebook, ) = self.code_indices[branch], autoencoder.codebooks
            loss_dict[f'perplexity_{branch}'] = code_perplexity(indices, codebook.shape[0])

    def test(self):
        with self.evaluation_net() as net:
            self.output = net.vqvae.autoencoder_terms(net.vqvae(self.gt))[0]
