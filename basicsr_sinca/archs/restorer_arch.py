"""The restorer contract: what every baseline network of this package provides.

A VQ-based restorer is ``encoder -> bottleneck per codebook -> decoder``, with a frozen high-quality (HQ)
prior that turns ground-truth images into targets. Two abstract classes state this once, so that models,
losses, the teacher and the analysis tools are written against them and never ask which baseline they hold:

* :class:`HQPrior` — the frozen prior: its codebooks and its pre-quantisation latents of HQ images; the
  targets (nearest codes, :class:`PriorTarget`) are computed here, once for every baseline. A prior that the
  package also trains (stage 1) says how to read its forward's output and names its decoder's last layer.
* :class:`VQRestorer` — the restoration network: encode an LQ image into one latent per codebook plus the
  decoder's context, decode from (replaced) latents, its codebooks and bottlenecks (one per codebook), its
  image range, and where its HQ prior comes from (an external checkpoint, or a submodule of the network).

Shapes: ``B`` batch, ``C_i``/``M_i`` channels/items of codebook ``i``, ``(h_i, w_i)`` its latent grid.
See ``docs/architecture.md`` for the data flow.
"""
from abc import ABCMeta, abstractmethod
from typing import NamedTuple, Optional

import torch
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import lookup_codes, nearest_code_indices

__all__ = ['PriorTarget', 'RestorerOutput', 'HQPrior', 'VQRestorer', 'codebook_suffix', 'targets_from_latents']


def codebook_suffix(index, count):
    """Name suffix of codebook ``index`` among ``count``: ``''`` for a single codebook, else ``'_c{index}'``."""
    return '' if count == 1 else f'_c{index}'


class PriorTarget(NamedTuple):
    """Targets of one codebook from the frozen HQ prior on a GT batch.

    Attributes:
        feat (Tensor): z_hat (B, C, h, w), the codebook rows of the nearest codes of the prior's latent.
        indices (Tensor): (B, h, w) int64, those codes.
    """
    feat: torch.Tensor
    indices: torch.Tensor


class RestorerOutput(NamedTuple):
    """What a restorer's contract forward returns.

    Attributes:
        image (Tensor | None): (B, 3, H', W') in the network's ``image_range``; None for code-only passes.
        latents (list[Tensor]): z_l per codebook, (B, C_i, h_i, w_i): the encoder latents entering the bottlenecks.
        bottlenecks (list[BottleneckOutput]): per codebook, what its bottleneck returned.
        context: The network's decoder context (see :meth:`VQRestorer.encode`), with what ``decode`` left in it;
            only the network's own model reads it (e.g. AdaCode's weight map and decoder input).
    """
    image: Optional[torch.Tensor]
    latents: list
    bottlenecks: list
    context: object = None


def targets_from_latents(latents, codebooks):
    """The nearest codes of each latent (B, C_i, h_i, w_i) in its codebook (M_i, C_i): list of :class:`PriorTarget`."""
    if len(latents) != len(codebooks):
        raise ValueError(f'{len(latents)} latents for {len(codebooks)} codebooks')
    targets = []
    for latent, codebook in zip(latents, codebooks):
        indices, _ = nearest_code_indices(latent, codebook)
        targets.append(PriorTarget(lookup_codes(indices, codebook), indices))
    return targets


class HQPrior(metaclass=ABCMeta):
    """A frozen HQ prior: codebooks and the latents its encoder gives HQ images.

    Implemented by the stage-1 networks (``VQAutoEncoder``, the HQ ``FeMaSRNet``) and by restorers that carry
    their prior as a submodule.
    """

    @property
    @abstractmethod
    def codebooks(self):
        """list[Tensor]: the codebooks, (M_i, C_i) each, in the restorer's codebook order."""

    @abstractmethod
    def encode_hq(self, gt):
        """Latents before quantisation of HQ images ``gt`` (B, 3, H, W): list of (B, C_i, h_i, w_i)."""

    def autoencoder_terms(self, output):
        """For training the prior (stage 1): the forward's output on HQ images -> ``(image, codebook_loss, indices)``,
        ``indices`` a list of (N_i,) code indices per codebook. Priors trained by this package implement it."""
        raise NotImplementedError(f'{type(self).__name__} does not say how to read its forward for stage-1 training')

    @property
    def decoder_last_layer(self):
        """For training the prior: the weight of the decoder's last layer (VQGAN's adaptive GAN weight)."""
        raise NotImplementedError(f'{type(self).__name__} does not name its decoder\'s last layer')

    @torch.no_grad()
    def prior_targets(self, gt):
        """Targets of every codebook for a GT batch: list of :class:`PriorTarget` (nearest codes, no gradient)."""
        return targets_from_latents(self.encode_hq(gt), self.codebooks)


class VQRestorer(nn.Module, metaclass=ABCMeta):
    """Base of every restoration network: encoder -> one bottleneck per codebook -> decoder.

    A subclass implements :attr:`image_range`, :attr:`codebooks`, :attr:`bottlenecks`, :meth:`encode`,
    :meth:`decode` and :meth:`prior_config`; :meth:`restore`, :meth:`transform`, :meth:`build_prior` and the
    default :meth:`forward` are written here once.

    Training models call ``net(lq, code_only=..., **kwargs)`` (so that DDP sees the forward) and need a
    :class:`RestorerOutput` back. A class whose ``forward`` must keep an upstream signature and return value
    sets ``official_forward = True``; it still implements the rest of the contract (inference, analysis,
    targets), and training refuses it with a pointer to its contract twin.

    Attributes:
        image_range (tuple[float, float]): Range of input and output images, e.g. (-1, 1) or (0, 1).
        img_size (int | None): Side of the images the network was built for (face networks: the aligned face size;
            None: any size its encoder accepts).
        prior_param_key (str): Preferred key of the HQ prior's checkpoint (``params`` or ``params_ema``).
        official_forward (bool): ``forward`` keeps an upstream signature (see above).
    """

    img_size = None
    prior_param_key = 'params'
    official_forward = False

    @property
    @abstractmethod
    def image_range(self):
        """tuple[float, float]: range of input and output images."""

    @property
    @abstractmethod
    def codebooks(self):
        """list[Tensor]: the frozen codebooks, (M_i, C_i) each."""

    @property
    @abstractmethod
    def bottlenecks(self):
        """list[Bottleneck]: one per codebook, in codebook order."""

    @abstractmethod
    def encode(self, lq):
        """LQ image (B, 3, H, W) -> (latents, context).

        Returns:
            tuple: ``latents`` — list of z_l (B, C_i, h_i, w_i), one per codebook; ``context`` — whatever
            :meth:`decode` needs besides the latents (skip features, fusion taps), opaque to callers.
        """

    @abstractmethod
    def decode(self, feats, context, **kwargs):
        """(Replaced) latents -> image.

        Args:
            feats (list[Tensor]): One (B, C_i, h_i, w_i) feature per codebook (bottleneck outputs, or any
                latent in the codebook space, e.g. the prior's target codes).
            context: The second value of :meth:`encode`.
            **kwargs: The network's decoding options (e.g. CodeFormer's fidelity weight ``w``).

        Returns:
            Tensor: (B, 3, H', W') in :attr:`image_range`.
        """

    @abstractmethod
    def prior_config(self):
        """Arch options (``{'type': ..., **kwargs}``) of the HQ prior matching this network, whose checkpoint
        gives the targets; None when the prior is part of this network (then the network is an
        :class:`HQPrior` itself)."""

    def transform(self, latents, return_attn_split=False):
        """Every latent through its codebook's bottleneck: list of :class:`BottleneckOutput`."""
        bottlenecks, codebooks = self.bottlenecks, self.codebooks
        if len(latents) != len(bottlenecks):
            raise ValueError(f'{type(self).__name__}: {len(latents)} latents for {len(bottlenecks)} codebooks')
        return [b(z, c, return_attn_split=return_attn_split) for b, z, c in zip(bottlenecks, latents, codebooks)]

    def restore(self, lq, code_only=False, return_attn_split=False, **decode_kwargs):
        """encode -> transform -> decode.

        Args:
            lq (Tensor): (B, 3, H, W) in :attr:`image_range`.
            code_only (bool): Stop after the bottlenecks (``image`` is None).
            return_attn_split (bool): Ask the bottlenecks for their attention split.
            **decode_kwargs: Passed to :meth:`decode`.

        Returns:
            RestorerOutput
        """
        latents, context = self.encode(lq)
        outs = self.transform(latents, return_attn_split)
        image = None if code_only else self.decode([o.feat for o in outs], context, **decode_kwargs)
        return RestorerOutput(image, latents, outs, context)

    @property
    def decoder_last_layer(self):
        """The weight of the decoder's last layer (VQGAN's adaptive GAN weight, ``train.adaptive_gan_weight``)."""
        raise NotImplementedError(f'{type(self).__name__} does not name its decoder\'s last layer')

    def output_last_layer(self, output='image'):
        """The weight of the last layer that makes ``output`` (``image`` or a key of the decoding context), for the
        adaptive GAN weight of a discriminator judging it; :attr:`decoder_last_layer` for the image."""
        if output == 'image':
            return self.decoder_last_layer
        raise NotImplementedError(f'{type(self).__name__} does not name the last layer of its {output!r} output')

    def visual_maps(self, lq):
        """Maps worth showing beside the restored image, ``{name: (B, K, H', W')}`` at the output's size (AdaCode: its
        per-codebook weights); none by default."""
        return {}

    def forward(self, lq, code_only=False, return_attn_split=False, **decode_kwargs):
        """The contract forward: :meth:`restore`, returning a :class:`RestorerOutput`."""
        return self.restore(lq, code_only, return_attn_split, **decode_kwargs)

    def build_prior(self, path=None, network_opt=None, param_key=None):
        """The frozen HQ prior that gives this network's targets.

        Args:
            path (str | None): Its checkpoint (``path.pretrain_network_hq``); must be None when the prior is part
                of the network.
            network_opt (dict | None): Arch options (``network_hq``) overriding :meth:`prior_config`.
            param_key (str | None): Key in the checkpoint (``path.param_key_hq``; default
                :attr:`prior_param_key`, falling back to ``params_ema`` / ``params``).

        Returns:
            HQPrior: frozen (no gradients), in eval mode.

        Raises:
            ValueError: a missing or superfluous prior file, a ``network_hq`` that is not an HQ prior, or a prior
                whose codebooks do not match this network's; the message names the option key.
        """
        config = network_opt or self.prior_config()
        if config is None:
            if path is not None:
                raise ValueError(f'path.pretrain_network_hq: {type(self).__name__} carries its own HQ prior; the file '
                                 f'{path} would not be used (remove the key)')
            if not isinstance(self, HQPrior):
                raise TypeError(f'{type(self).__name__}.prior_config() is None but the network is not an HQPrior')
            return self
        if path is None:
            raise ValueError(f"path.pretrain_network_hq: the targets of {type(self).__name__} come from its HQ prior "
                             f"({config.get('type')}); set the path of its checkpoint")
        from basicsr.archs import build_network

        from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
        prior = build_network(dict(config))
        if not isinstance(prior, HQPrior):
            raise ValueError(f"network_hq.type: {config.get('type')} is not an HQ prior (it does not implement "
                             'basicsr_sinca.archs.restorer_arch.HQPrior)')
        state_dict, used = read_state_dict(path, param_key or self.prior_param_key)
        load_state_dict_report(prior, state_dict, strict=True, source=f'HQ prior {path} [{used}]')
        for p in prior.parameters():
            p.requires_grad = False
        prior.eval()
        ours = [tuple(c.shape) for c in self.codebooks]
        theirs = [tuple(c.shape) for c in prior.codebooks]
        if ours != theirs:
            raise ValueError(f'path.pretrain_network_hq: the prior {path} has codebooks {theirs}, '
                             f'{type(self).__name__} has {ours}')
        return prior
