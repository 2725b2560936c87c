"""AdaCode, state-dict compatible with the release: FeMaSR's network with several category codebooks whose
decoded features are mixed by a per-pixel weight predictor.

* :class:`SinCAAdaCodeSRNet` — AdaCode on the restorer contract: one bottleneck per codebook (YAML
  ``bottleneck: [spec, ...]``; paper: five SinCA transformers of 5/4/3/4/4 layers), each output through its
  frozen ``after_quant_group[i]``, mixed by ``weight_predictor`` as upstream. With ``LQ_stage=False`` it is the
  stage-2 HQ model, the teacher of stage 3 (an :class:`HQPrior`).
* :class:`AdaCodeSRNet`, :class:`AdaCodeSRNet_Contrast` — the official networks (nearest codes; the official
  constructor, ``forward(input, gt_indices=None)``, ``test(input, cat_map=False)`` and returns;
  ``AdaCodeSRNet_Contrast`` carries its contrastive loss's persistent buffers, so released stage-3 files load
  strictly).

Built on the FeMaSR family (``femasr_arch.py``: encoder, Swin layers, decoder, test-time padding, tiling).
Images in [0, 1]. Key names and the data flow follow the official release (checked against the golden case in
``tests/archs/test_adacode_arch.py``); the code is ours.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import lookup_codes
from basicsr_sinca.archs.femasr_arch import FeMaSRCodebook, SinCAFeMaSRNet, SwinLayers, femasr_feature_loss
from basicsr_sinca.losses.adacode_loss import AdaCodeContrastLoss

__all__ = ['WeightPredictor', 'SinCAAdaCodeSRNet', 'AdaCodeSRNet', 'AdaCodeSRNet_Contrast']

# AdaCode's released codebooks: four semantic categories, then faces ([scale, items, channels])
RELEASED_CODEBOOKS = [[32, 512, 256], [32, 256, 256], [32, 512, 256], [32, 256, 256], [32, 256, 256]]


class WeightPredictor(nn.Module):
    """``blocks`` = [SwinLayers, 1x1 conv to one weight per codebook (, softmax over codebooks)].

    The released models use no softmax: the weights are raw, unnormalised, possibly negative.
    """

    def __init__(self, in_channel, num_codebooks, weight_softmax=False, swin_opt=None):
        super().__init__()
        blocks = [SwinLayers(**dict({'embed_dim': in_channel}, **(swin_opt or {}))),
                  nn.Conv2d(in_channel, num_codebooks, 1)]
        if weight_softmax:
            blocks.append(nn.Softmax(dim=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        """(B, C, h, w) -> (B, num_codebooks, h, w)."""
        return self.blocks(x)


@ARCH_REGISTRY.register()
class SinCAAdaCodeSRNet(SinCAFeMaSRNet):
    """AdaCode whose VQ steps are configurable bottlenecks, one per category codebook.

    encoder -> ``before_quant_group[i]`` (1x1) -> bottleneck i (codebook i) -> ``after_quant_group[i]`` (3x3) ->
    Σ_i weight_i · (...) with ``weight = weight_predictor(encoder feature)`` -> decoder -> out_conv.

    Args:
        bottleneck (dict | str | list): One spec for every codebook or a list of one per codebook.
        codebook_params (list): ``[[32, n_i, 256], ...]``, all at the same scale. Default: the release's five.
        weight_softmax (bool): Softmax over the codebooks' weights (False in every release).
        codebook_paths (list[str] | None): Stage-1 category prior files whose codebooks initialise the codebooks
            (AdaCode stage 2; upstream's ``path.pretrain_codebook``).
        Other arguments: as :class:`SinCAFeMaSRNet` (the SwinLayers of the weight predictor follow ``swin_opt``).
    """

    def __init__(self, bottleneck=None, codebook_params=RELEASED_CODEBOOKS, weight_softmax=False, codebook_paths=None,
                 **kwargs):
        self.weight_softmax = weight_softmax
        super().__init__(bottleneck, codebook_params=codebook_params, **kwargs)
        self.femasr_config['weight_softmax'] = weight_softmax
        self.register_load_state_dict_pre_hook(self._drop_contrast_buffers)
        if codebook_paths is not None:
            self.load_category_codebooks(codebook_paths)

    def load_category_codebooks(self, paths):
        """AdaCode stage 2: codebook i from the stage-1 category prior ``paths[i]`` (a FeMaSR HQ network file; only
        its ``quantize_group.0.embedding.weight`` is used)."""
        from basicsr_sinca.utils.checkpoint import read_state_dict
        if len(paths) != len(self.quantize_group):
            raise ValueError(f'codebook_paths: {len(paths)} files for {len(self.quantize_group)} codebooks')
        for i, (path, quantizer) in enumerate(zip(paths, self.quantize_group)):
            state_dict, _ = read_state_dict(path, 'params')
            codebook = state_dict.get('quantize_group.0.embedding.weight')
            if codebook is None or codebook.shape != quantizer.embedding.weight.shape:
                found = None if codebook is None else tuple(codebook.shape)
                raise ValueError(f'codebook_paths[{i}]: {path} has codebook {found}, expected '
                                 f'{tuple(quantizer.embedding.weight.shape)} (quantize_group.0.embedding.weight)')
            with torch.no_grad():
                quantizer.embedding.weight.copy_(codebook)

    @staticmethod
    def _drop_contrast_buffers(module, state_dict, prefix, *args):
        """Released stage-3 files carry the contrastive loss's buffers (``contrast_cri.*``); no forward needs them."""
        if not hasattr(module, 'contrast_cri'):
            for key in [k for k in state_dict if k.startswith(prefix + 'contrast_cri.')]:
                del state_dict[key]

    @staticmethod
    def check_codebook_params(codebook_params):
        scales = {p[0] for p in codebook_params}
        if not codebook_params or len(scales) != 1 or any(len(p) != 3 for p in codebook_params):
            raise ValueError(f'codebook_params: expected rows [scale, n_codes, dim] at one scale, got '
                             f'{codebook_params}')

    def build_quantizers(self, scale_ch, swin_opt):
        """``weight_predictor``, then per codebook ``quantize_group`` / ``before_quant_group`` (1x1) /
        ``after_quant_group`` (plain 3x3), in the official key order."""
        self.weight_predictor = WeightPredictor(scale_ch, len(self.codebook_params), self.weight_softmax, swin_opt)
        self.quantize_group = nn.ModuleList([FeMaSRCodebook(n, d) for _, n, d in self.codebook_params])
        self.before_quant_group = nn.ModuleList([nn.Conv2d(scale_ch, d, 1) for _, _, d in self.codebook_params])
        self.after_quant_group = nn.ModuleList([nn.Conv2d(d, scale_ch, 3, 1, 1) for _, _, d in self.codebook_params])

    def prior_config(self):
        return dict(type='AdaCodeSRNet', AdaCode_stage=True, **dict(self.femasr_config, LQ_stage=False))

    def encode(self, x):
        """As :meth:`SinCAFeMaSRNet.encode`, plus ``context['weight']`` (B, num_codebooks, 1, h', w')."""
        latents, context = super().encode(x)
        context['weight'] = self.weight_predictor(context['feat_before_quant']).unsqueeze(2)
        return latents, context

    def combine_codes(self, feats, context):
        """Σ_i weight_i · after_quant_group[i](feats[i])."""
        weight = context['weight']
        return sum(weight[:, i] * conv(f) for i, (conv, f) in enumerate(zip(self.after_quant_group, feats)))

    @torch.no_grad()
    def test(self, x, cat_map=False):
        """Inference on any size (mirror padding); with ``cat_map`` also the per-codebook weight map
        (B, num_codebooks, 1, h·scale, w·scale) (latent weights repeated over the decoder's 8x8 blocks)."""
        h, w = x.shape[-2:]
        out = self.restore(self.pad_for_test(x))
        image = out.image[..., :h * self.scale_factor, :w * self.scale_factor]
        if not cat_map:
            return image
        weight = out.context['weight']
        b, k, _, lh, lw = weight.shape
        weight_map = F.interpolate(weight.reshape(b, k, lh, lw), scale_factor=8, mode='nearest')
        return image, weight_map[..., :h * self.scale_factor, :w * self.scale_factor].unsqueeze(2)

    @torch.no_grad()
    def visual_maps(self, lq):
        """``{'codebook weights': (B, num_codebooks, h·scale, w·scale)}`` for an LR image of any size."""
        return {'codebook weights': self.test(lq, cat_map=True)[1][:, :, 0]}


@ARCH_REGISTRY.register()
class AdaCodeSRNet(SinCAAdaCodeSRNet):
    """The official AdaCode network (nearest codes); released files load strictly (``params``).

    Same keyword arguments as upstream (FeMaSRNet's plus ``AdaCode_stage`` (must be True), ``weight_softmax``,
    ``num_RRDB`` (unused upstream too)); ``codebook_paths`` (stage 2's category codebooks) is ours.
    ``codebook_params`` defaults to the release's five codebooks.
    ``forward(input, gt_indices=None)`` returns ``(out_img, loss_dict, aux)`` as upstream: ``loss_dict`` with
    ``codebook_loss`` and ``semantic_loss`` (and, given the HQ model's ``gt_indices`` dict, ``before_quant_loss`` /
    ``after_quant_loss``), ``aux`` with ``weight``, ``indices``, ``feat_before_decoder``, ``feat_before_quant``.
    To train, use :class:`SinCAAdaCodeSRNet` with ``bottleneck: nearest`` (the same keys).
    """

    official_forward = True

    def __init__(self, *, in_channel=3, codebook_params=None, gt_resolution=256, LQ_stage=False, norm_type='gn',
                 act_type='silu', use_quantize=True, scale_factor=4, use_semantic_loss=False, use_residual=True,
                 AdaCode_stage=True, weight_softmax=False, num_RRDB=6, channels=None, swin_opt=None,
                 codebook_paths=None, **ignore_kwargs):
        if not AdaCode_stage:
            raise ValueError('AdaCodeSRNet: AdaCode_stage=False is a single-codebook FeMaSR network; use FeMaSRNet')
        if use_semantic_loss:
            raise ValueError('AdaCodeSRNet: use_semantic_loss (stage-1 HQ pre-training) is not supported here; the '
                             'category priors are FeMaSRNet HQ networks')
        super().__init__('nearest', codebook_params=codebook_params or RELEASED_CODEBOOKS,
                         weight_softmax=weight_softmax, in_channel=in_channel, gt_resolution=gt_resolution,
                         LQ_stage=LQ_stage, norm_type=norm_type, act_type=act_type, scale_factor=scale_factor,
                         use_residual=use_residual, frozen_module_keywords=ignore_kwargs.get('frozen_module_keywords'),
                         channels=channels, swin_opt=swin_opt, codebook_paths=codebook_paths)
        self.use_quantize = use_quantize

    def autoencoder_terms(self, output):
        out_img, loss_dict, aux = output
        return out_img, loss_dict['codebook_loss'], [i.reshape(-1) for i in aux['indices']]

    def transform(self, latents, return_attn_split=False):
        outs = super().transform(latents, return_attn_split)
        return outs if self.use_quantize else [o._replace(feat=z) for o, z in zip(outs, latents)]

    def forward(self, input, gt_indices=None):
        latents, context = self.encode(input)
        outs = self.transform(latents)
        codebooks = self.codebooks
        out_img = self.decode([o.feat for o in outs], context)
        if self.LQ_stage and gt_indices is not None:
            codebook_loss = sum(femasr_feature_loss(z, lookup_codes(idx.reshape(z.shape[0], *z.shape[2:]), codebook))
                                for z, idx, codebook in zip(latents, gt_indices['indices'], codebooks))
        else:
            codebook_loss = sum((lookup_codes(o.indices, c) - z.detach()).square().mean() +
                                0.25 * (lookup_codes(o.indices, c).detach() - z).square().mean()
                                for z, o, c in zip(latents, outs, codebooks))
        loss_dict = {'codebook_loss': codebook_loss, 'semantic_loss': codebook_loss * 0}
        if gt_indices is not None:
            loss_dict['before_quant_loss'] = femasr_feature_loss(context['feat_before_quant'],
                                                                 gt_indices['feat_before_quant'])
            loss_dict['after_quant_loss'] = femasr_feature_loss(context['feat_before_decoder'],
                                                                gt_indices['feat_before_decoder'])
        aux = {'weight': context['weight'], 'indices': [o.indices[:, None] for o in outs],
               'feat_before_decoder': context['feat_before_decoder'], 'feat_before_quant': context['feat_before_quant']}
        return out_img, loss_dict, aux


@ARCH_REGISTRY.register()
class AdaCodeSRNet_Contrast(AdaCodeSRNet):
    """The official stage-3 network of the released ×2/×4 files: :class:`AdaCodeSRNet` plus ``contrast_cri``
    (:class:`AdaCodeContrastLoss`, whose buffers are in those files). ``batch_size`` is required, as upstream
    (the released SR files: 8). Given the HQ model's ``gt_indices`` dict, ``loss_dict`` also has
    ``contrast_loss`` (LQ vs HQ ``feat_before_quant``)."""

    def __init__(self, *, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.contrast_cri = AdaCodeContrastLoss(batch_size)

    def forward(self, input, gt_indices=None):
        out_img, loss_dict, aux = super().forward(input, gt_indices)
        if gt_indices is not None:
            loss_dict['contrast_loss'] = self.contrast_cri(aux['feat_before_quant'], gt_indices['feat_before_quant'])
        return out_img, loss_dict, aux
