"""Face restoration with facial-component discriminators and an identity loss (RestoreFormer's and GFPGAN's extra
terms), for any network on the restorer contract.

:class:`FaceRestorationModel` is :class:`VQRestorationModel` plus two optional groups of terms:

* **components** (``network_d_component``, ``train.component_opt``, ``train.optim_component``): one discriminator
  per left eye, right eye and mouth (built from the one spec; saved together as ``net_d_component``), judging RoI
  crops of the restored image and the GT at the dataset's component boxes (``FFHQBlindDataset`` with
  ``crop_components``). Generator terms per component: the GAN term (``component_opt.gan_opt``, RestoreFormer:
  vanilla x 1.5) and, with ``style_weight``, the L1 between the Gram matrices of the discriminator's two feature maps
  on the restored and the GT crop (RestoreFormer: x 2000); the component discriminators get their own step and
  optimizer. ``component_opt``: ``gan_opt``, ``style_weight`` (0), ``eye_size`` / ``mouth_size`` (crop sides at
  512 px, 80 / 120, scaled with the GT size), ``start_iter`` (0).
* **identity** (``train.identity_opt``, e.g. ``ArcFaceIdentityLoss``; ``train.identity_start_iter``, 0).

Both groups act after their start iteration; without their options the model is :class:`VQRestorationModel`.
"""
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY
from torchvision.ops import roi_align

from basicsr_sinca.models.base import NamedDiscriminators
from basicsr_sinca.models.restoration_model import VQRestorationModel
from basicsr_sinca.utils.options import OptionError

__all__ = ['FaceRestorationModel', 'gram_matrix']

COMPONENTS = ('left_eye', 'right_eye', 'mouth')
COMPONENT_KEYS = {'gan_opt', 'style_weight', 'eye_size', 'mouth_size', 'start_iter'}


def gram_matrix(feat):
    """(B, C, H, W) -> (B, C, C) Gram matrices normalised by C·H·W."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


@MODEL_REGISTRY.register()
class FaceRestorationModel(VQRestorationModel):
    """:class:`VQRestorationModel` with facial-component discriminators and an identity loss (module docstring)."""

    use_components, cri_identity, component_step = False, None, False

    def setup_stage(self):
        super().setup_stage()
        train_opt = self.opt['train']
        self.use_components = bool(self.opt.get('network_d_component'))
        if self.use_components:
            self.setup_components(train_opt.get('component_opt'))
        elif train_opt.get('component_opt'):
            raise OptionError('train.component_opt: set network_d_component (the component discriminators) too')
        identity = train_opt.get('identity_opt')
        self.cri_identity = build_loss(identity).to(self.device) if identity else None
        self.identity_start = int(train_opt.get('identity_start_iter', 0))

    def setup_components(self, comp):
        if not comp or not comp.get('gan_opt'):
            raise OptionError('train.component_opt.gan_opt: the component discriminators need their GAN loss')
        unknown = set(comp) - COMPONENT_KEYS
        if unknown:
            raise OptionError(f'train.component_opt: unknown keys {sorted(unknown)}; expected {sorted(COMPONENT_KEYS)}')
        nets = NamedDiscriminators({c: build_network(self.opt['network_d_component']) for c in COMPONENTS})
        self.net_d_component = self.model_to_device(nets)
        load_path = self.opt['path'].get('pretrain_network_d_component')
        if load_path is not None:
            self.load_network(self.net_d_component, load_path, True, 'params')
        self.net_d_component.train()
        self.cri_component = build_loss(comp['gan_opt']).to(self.device)
        self.component_style_weight = float(comp.get('style_weight', 0))
        scale = self.opt['datasets']['train'].get('gt_size', 512) / 512 if 'train' in self.opt['datasets'] else 1
        self.component_sizes = {'left_eye': round(comp.get('eye_size', 80) * scale),
                                'right_eye': round(comp.get('eye_size', 80) * scale),
                                'mouth': round(comp.get('mouth_size', 120) * scale)}
        self.component_start = int(comp.get('start_iter', 0))

    def setup_optimizers(self):
        super().setup_optimizers()
        if self.use_components:
            if not self.opt['train'].get('optim_component'):
                raise OptionError('train.optim_component: the component discriminators need their optimizer')
            opt = dict(self.opt['train']['optim_component'])
            self.optimizer_component = self.get_optimizer(opt.pop('type'), self.net_d_component.parameters(), **opt)
            self.optimizers.append(self.optimizer_component)

    def feed_data(self, data):
        super().feed_data(data)
        # validation batches carry no boxes; a training step without them is an error (component_generator_terms)
        present = all(f'loc_{c}' in data for c in COMPONENTS)
        self.component_locs = {c: data[f'loc_{c}'].to(self.device) for c in COMPONENTS} if present else None

    def needs_image(self):
        return super().needs_image() or self.use_components or self.cri_identity is not None

    def component_crops(self, images):
        """``{component: (B, 3, s, s)}`` RoI crops at the batch's boxes (bilinear ``roi_align``)."""
        index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
        return {c: roi_align(images, torch.cat([index, self.component_locs[c].to(images.dtype)], 1),
                             self.component_sizes[c]) for c in COMPONENTS}

    def generator_loss(self, current_iter, loss_dict):
        if self.use_components:
            for p in self.net_d_component.parameters():
                p.requires_grad = False
        total = super().generator_loss(current_iter, loss_dict)
        self.component_step = self.use_components and current_iter > self.component_start
        if self.component_step:
            total = total + self.component_generator_terms(loss_dict)
        if self.cri_identity is not None and current_iter > self.identity_start:
            loss_dict['l_identity'] = self.cri_identity(self.output, self.gt)
            total = total + loss_dict['l_identity']
        return total

    def component_generator_terms(self, loss_dict):
        if self.component_locs is None:
            raise OptionError('datasets.train.crop_components: the training batch has no component boxes (set '
                              'crop_components and component_path on the training dataset)')
        nets = self.get_bare_model(self.net_d_component)
        self.crops_fake, self.crops_real = self.component_crops(self.output), self.component_crops(self.gt)
        total = 0
        for c in COMPONENTS:
            pred, feats = nets[c](self.crops_fake[c], return_feats=bool(self.component_style_weight))
            loss_dict[f'l_g_{c}'] = self.cri_component(pred, True, is_disc=False)
            total = total + loss_dict[f'l_g_{c}']
            if self.component_style_weight:
                _, real_feats = nets[c](self.crops_real[c], return_feats=True)
                style = sum(torch.nn.functional.l1_loss(gram_matrix(f), gram_matrix(r.detach()))
                            for f, r in zip(feats, real_feats))
                loss_dict[f'l_g_style_{c}'] = self.component_style_weight * style
                total = total + loss_dict[f'l_g_style_{c}']
        return total

    def after_generator_step(self, current_iter, loss_dict):
        super().after_generator_step(current_iter, loss_dict)
        if not self.component_step:
            return
        nets = self.get_bare_model(self.net_d_component)
        for p in self.net_d_component.parameters():
            p.requires_grad = True
        self.optimizer_component.zero_grad()
        total = 0
        for c in COMPONENTS:
            real_pred, _ = nets[c](self.crops_real[c].detach())
            fake_pred, _ = nets[c](self.crops_fake[c].detach())
            loss_dict[f'l_d_{c}'] = (self.cri_component(real_pred, True, is_disc=True) +
                                     self.cri_component(fake_pred, False, is_disc=True))
            total = total + loss_dict[f'l_d_{c}']
        total.backward()
        self.optimizer_component.step()

    def save(self, epoch, current_iter):
        if self.use_components and self.is_train:
            self.save_network(self.net_d_component, 'net_d_component', current_iter)
        super().save(epoch, current_iter)
