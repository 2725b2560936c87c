"""The restorer contract (archs/restorer_arch.py) on the test-only two-codebook restorer (tests/toy_restorer.py)."""
import pytest
import torch
from toy_restorer import CODEBOOKS, ToyPrior, ToyRestorer

from basicsr_sinca.archs.restorer_arch import HQPrior, RestorerOutput, VQRestorer, codebook_suffix


@pytest.fixture(scope='module')
def toy():
    torch.manual_seed(0)
    net = ToyRestorer([{'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, {'type': 'sinca_index', 'num_layers': 1,
                                                                           'num_heads': 4}]).eval()
    for e in net.codebook:
        torch.nn.init.normal_(e.weight)
    return net


def test_restore_gives_one_latent_and_output_per_codebook(toy):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = toy(x)
        codes = toy(x, code_only=True)
    assert isinstance(out, RestorerOutput) and out.image.shape == x.shape and codes.image is None
    assert [tuple(z.shape) for z in out.latents] == [(2, 16, 16, 16), (2, 24, 8, 8)]
    assert [tuple(o.feat.shape) for o in out.bottlenecks] == [(2, 16, 16, 16), (2, 24, 8, 8)]
    assert out.bottlenecks[0].logits is None and out.bottlenecks[1].logits.shape == (2, 64, 40)
    assert [tuple(c.shape) for c in toy.codebooks] == list(CODEBOOKS)
    # the pieces compose to the forward
    with torch.no_grad():
        latents, context = toy.encode(x)
        image = toy.decode([o.feat for o in toy.transform(latents)], context)
    assert torch.equal(image, out.image)
    with pytest.raises(ValueError, match='1 latents for 2 codebooks'):
        toy.transform(latents[:1])
    splits = toy.restore(x, code_only=True, return_attn_split=True).bottlenecks
    assert len(splits[0].attn_split) == 1 and len(splits[1].attn_split) == 1


def test_prior_targets_per_codebook_by_brute_force(toy):
    gt = torch.rand(2, 3, 64, 64)
    targets = toy.prior_targets(gt)
    with torch.no_grad():
        latents = toy.encode_hq(gt)
    for target, latent, codebook in zip(targets, latents, toy.codebooks):
        z = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]).double()
        brute = torch.cdist(z, codebook.double()).argmin(1).reshape(target.indices.shape)
        assert torch.equal(target.indices, brute)
        assert torch.equal(target.feat, codebook[brute].permute(0, 3, 1, 2))
        assert not target.feat.requires_grad


def test_build_prior_external_and_internal(toy, tmp_path):
    prior = ToyPrior()
    torch.save({'params': prior.state_dict()}, tmp_path / 'prior.pth')
    built = toy.build_prior(str(tmp_path / 'prior.pth'))
    assert type(built) is ToyPrior and not built.training and not any(p.requires_grad for p in built.parameters())
    with pytest.raises(ValueError, match=r'path.pretrain_network_hq: the targets of ToyRestorer come from its HQ prior '
                                         r'\(ToyPrior\); set the path'):
        toy.build_prior(None)
    with pytest.raises(ValueError, match='network_hq.type: SinCATransformer is not an HQ prior'):
        toy.build_prior(str(tmp_path / 'prior.pth'), network_opt={'type': 'SinCATransformer', 'dim': 16})

    class CarriesItsPrior(ToyRestorer):
        def prior_config(self):
            return None

    own = CarriesItsPrior('nearest')
    assert own.build_prior() is own
    with pytest.raises(ValueError, match='carries its own HQ prior; the file x.pth would not be used'):
        own.build_prior('x.pth')


def test_incomplete_restorer_cannot_be_built():
    class NoDecoder(VQRestorer):
        image_range = (0, 1)
        codebooks = bottlenecks = []

        def encode(self, lq):
            return [], None

        def prior_config(self):
            return None

    with pytest.raises(TypeError, match='abstract method.*decode'):
        NoDecoder()
    assert issubclass(ToyPrior, HQPrior) and issubclass(ToyRestorer, VQRestorer)


def test_codebook_suffix():
    assert codebook_suffix(0, 1) == '' and codebook_suffix(3, 5) == '_c3'
