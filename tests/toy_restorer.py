"""A test-only restorer with two codebooks of different sizes, written against the restorer contract and nothing
else: no model, loss, analysis or script of the package knows it.

* codebook 0: 24 codes x 16 channels on the 1/4 grid; codebook 1: 40 codes x 24 channels on the 1/8 grid.
* :class:`ToyPrior` is its HQ prior (stage 1); :class:`ToyRestorer` shares its module names, so the prior's file
  initialises encoder, codebooks and decoder, and adds one bottleneck per codebook.

Importing this module registers both archs (the e2e test's launcher ``toy_train.py`` does so in the training
process).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import build_bottlenecks
from basicsr_sinca.archs.restorer_arch import HQPrior, VQRestorer

CODEBOOKS = ((24, 16), (40, 24))  # (M, C)


@ARCH_REGISTRY.register()
class ToyPrior(nn.Module, HQPrior):
    """Images in [0, 1], sides divisible by 8."""

    image_range = (0.0, 1.0)

    def __init__(self, nf=32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, nf, 4, 2, 1), nn.SiLU(), nn.Conv2d(nf, nf, 4, 2, 1), nn.SiLU())
        self.to_latent = nn.ModuleList([nn.Conv2d(nf, CODEBOOKS[0][1], 1), nn.Conv2d(nf, CODEBOOKS[1][1], 4, 2, 1)])
        self.codebook = nn.ModuleList([nn.Embedding(m, c) for m, c in CODEBOOKS])
        self.from_latent = nn.ModuleList([nn.Conv2d(CODEBOOKS[0][1], nf, 3, 1, 1),
                                          nn.ConvTranspose2d(CODEBOOKS[1][1], nf, 4, 2, 1)])
        self.decoder = nn.Sequential(nn.SiLU(), nn.Upsample(scale_factor=4, mode='nearest'), nn.Conv2d(nf, 3, 3, 1, 1))

    @property
    def codebooks(self):
        return [e.weight for e in self.codebook]

    def encode_hq(self, gt):
        feat = self.encoder(gt)
        return [layer(feat) for layer in self.to_latent]

    def decode(self, feats, context=None):
        return self.decoder(sum(layer(f) for layer, f in zip(self.from_latent, feats)))


@ARCH_REGISTRY.register()
class ToyRestorer(ToyPrior, VQRestorer):
    """The toy prior with one bottleneck per codebook; codebooks and decoder frozen.

    Args:
        bottleneck (dict | str | list): One spec, or a list of two (one per codebook).
        nf (int): Channels.
    """

    def __init__(self, bottleneck=None, nf=32):
        super().__init__(nf)
        self.nf = nf
        self.bottleneck = build_bottlenecks(bottleneck, CODEBOOKS, [(16, 16), (8, 8)])
        for module in (self.codebook, self.from_latent, self.decoder):
            for p in module.parameters():
                p.requires_grad = False

    @property
    def bottlenecks(self):
        return list(self.bottleneck)

    def encode(self, lq):
        return self.encode_hq(lq), None

    def prior_config(self):
        return {'type': 'ToyPrior', 'nf': self.nf}
