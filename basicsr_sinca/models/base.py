"""Training-model base shared by the baselines (not registered)."""
import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger

__all__ = ['SinCABaseModel']


class SinCABaseModel(SRModel):
    """SRModel plus what every restoration stage of this package needs.

    * EMA that averages only the parameters being trained: frozen modules (codebook, decoder) stay
      bit-identical to the prior in ``params_ema`` too (``x·d + x·(1-d)`` is not always ``x`` in floating point).
    """

    def setup_ema(self):
        """Build ``net_g_ema`` when ``train.ema_decay > 0`` (from ``params_ema`` of the pretrained file if any)."""
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay <= 0:
            return
        get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            self.model_ema(0)
        self.net_g_ema.eval()

    @torch.no_grad()
    def model_ema(self, decay=0.999):
        net_g = self.get_bare_model(self.net_g)
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in net_g.named_parameters():
            if decay == 0 or param.requires_grad:
                ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)
