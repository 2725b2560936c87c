"""Stage 1 of every baseline: the HQ prior (VQ autoencoder) trained on images, VQGAN's recipe, written once.

Works on any network implementing :class:`~basicsr_sinca.archs.restorer_arch.HQPrior` with its stage-1 part
(``autoencoder_terms``, ``decoder_last_layer``): CodeFormer's ``VQAutoEncoder``, DAEFR's ``VQVAEGAN``.
"""
import torch
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.archs.restorer_arch import HQPrior, codebook_suffix
from basicsr_sinca.models.base import SinCABaseModel
from basicsr_sinca.utils.options import OptionError

__all__ = ['VQPriorModel', 'code_perplexity']


def code_perplexity(indices, codebook_size):
    """``exp(-sum p log(p + 1e-10))`` of the code-usage histogram ``p`` of ``indices`` (any shape)."""
    usage = torch.bincount(indices.reshape(-1), minlength=codebook_size).to(torch.float32) / indices.numel()
    return torch.exp(-torch.sum(usage * torch.log(usage + 1e-10)))


@MODEL_REGISTRY.register()
class VQPriorModel(SinCABaseModel):
    """An HQ prior auto-encoding images: L1 (``pixel_opt``) + LPIPS (``perceptual_opt``) + the quantiser's codebook
    loss (``codebook_loss_weight``, default 1) + hinge GAN (``gan_opt``, ``network_d``) after ``net_d_start_iter``
    (default 30001), weighted by VQGAN's adaptive weight at the decoder's last layer (clamped to 1) times
    ``disc_weight`` (0.8; ``adaptive_gan_weight: false`` uses ``gan_opt``'s weight alone, as FeMaSR's and AdaCode's
    HQ stages). The discriminator trains from the same iteration. Logs the codebook perplexity (per codebook).

    ``train.input_key`` (default ``gt``) is the dataset key auto-encoded: ``lq`` trains a prior of degraded images
    (DAEFR's LQ codebook). ``train.codebook_restart_every: N`` (not in the baselines' recipes; off by default)
    re-seeds the codes unused during the last N iterations with encoder outputs of the current batch — against the
    codebook collapse of very short trainings such as the quickstart's.
    """

    default_net_d_start_iter = 30001

    def setup_stage(self):
        bare = self.get_bare_model(self.net_g)
        if not isinstance(bare, HQPrior):
            raise OptionError(f"network_g.type: {self.opt['network_g']['type']} is not an HQ prior "
                              '(basicsr_sinca.archs.restorer_arch.HQPrior)')
        train_opt = self.opt['train']
        self.codebook_loss_weight = train_opt.get('codebook_loss_weight', 1.0)
        self.disc_weight = train_opt.get('disc_weight', 0.8)
        self.adaptive_gan_weight_on = bool(train_opt.get('adaptive_gan_weight', True))
        self.restart_every = int(train_opt.get('codebook_restart_every') or 0)
        self.code_counts = None

    @property
    def input_key(self):
        return (self.opt.get('train') or {}).get('input_key', 'gt')

    def feed_data(self, data):
        if self.input_key not in data:
            raise OptionError(f'train.input_key: the dataset gives no {self.input_key!r} (it gives {sorted(data)})')
        self.gt = data[self.input_key].to(self.device)
        self.lq = self.gt  # the input of an auto-encoder; shown as "lq" in visuals

    def generator_loss(self, current_iter, loss_dict):
        bare = self.get_bare_model(self.net_g)
        self.output, l_codebook, self.code_indices = bare.autoencoder_terms(self.net_g(self.gt))
        loss_dict['l_codebook'] = l_codebook * self.codebook_loss_weight
        recon = self.image_losses(self.output, loss_dict)
        if self.adaptive_gan_weight_on:
            l_gan = self.gan_generator_term(current_iter, self.output, loss_dict, recon, bare.decoder_last_layer,
                                            self.disc_weight)
        else:
            l_gan = self.gan_generator_term(current_iter, self.output, loss_dict)
        return recon + loss_dict['l_codebook'] + l_gan

    def after_generator_step(self, current_iter, loss_dict):
        codebooks = self.get_bare_model(self.net_g).codebooks
        for i, (indices, codebook) in enumerate(zip(self.code_indices, codebooks)):
            if indices.numel():  # none during a quantizer's warm-up (VQFR v1)
                loss_dict['perplexity' + codebook_suffix(i, len(codebooks))] = code_perplexity(
                    indices, codebook.shape[0])
        if self.restart_every:
            restarted = self.restart_dead_codes(current_iter)
            loss_dict['restarted_codes'] = torch.tensor(float(restarted), device=self.device)

    @torch.no_grad()
    def restart_dead_codes(self, current_iter):
        """Count code usage; every ``restart_every`` iterations re-seed unused codes from encoder outputs."""
        bare = self.get_bare_model(self.net_g)
        codebooks = bare.codebooks
        counts = [torch.bincount(i.reshape(-1), minlength=c.shape[0]) for i, c in zip(self.code_indices, codebooks)]
        self.code_counts = counts if self.code_counts is None else [a + b for a, b in zip(self.code_counts, counts)]
        if current_iter % self.restart_every:
            return 0
        restarted, latents = 0, None
        for count, codebook, i in zip(self.code_counts, codebooks, range(len(codebooks))):
            if self.opt['dist']:
                torch.distributed.all_reduce(count)
            dead = (count == 0).nonzero().reshape(-1)
            if dead.numel():
                latents = bare.encode_hq(self.gt) if latents is None else latents
                z = latents[i].permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
                codebook[dead] = z[torch.randint(0, z.shape[0], (dead.numel(), ), device=z.device)]
                if self.opt['dist']:
                    torch.distributed.broadcast(codebook, src=0)
            restarted += dead.numel()
        self.code_counts = None
        return restarted

    def test(self):
        with self.evaluation_net() as net:
            self.output = net.autoencoder_terms(net(self.gt))[0]
