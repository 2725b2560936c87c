"""Plain image-to-image training on the package's training base."""
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_sinca.models.base import SinCABaseModel

__all__ = ['SinCASRModel']


@MODEL_REGISTRY.register()
class SinCASRModel(SinCABaseModel):
    """BasicSR's ``SRModel`` objective (``net_g(lq)`` against ``gt``: ``pixel_opt``, ``perceptual_opt`` and
    ``style_opt`` as losses that return one tensor, e.g. the package's LPIPS; optional ``gan_opt`` with
    ``network_d``) on :class:`~basicsr_sinca.models.base.SinCABaseModel`: atomic checkpoints,
    DDP on CPU, EMA over the trained parameters. For networks without an ``image_range`` attribute images are in
    [0, 1].

    A drop-in ``model_type`` for ``SRModel`` option files run through the package's pipeline or BasicSR's own.
    """

    @property
    def image_range(self):
        return getattr(self.get_bare_model(self.net_g), 'image_range', (0, 1))

    def generator_loss(self, current_iter, loss_dict):
        self.output = self.net_g(self.lq)
        total = self.image_losses(self.output, loss_dict)
        if self.has_gan:
            total = total + self.gan_generator_term(current_iter, self.output, loss_dict)
        return total
