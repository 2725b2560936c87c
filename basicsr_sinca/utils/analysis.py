"""Analysis of trained bottlenecks (paper Fig. 2 and Fig. 7), shared by the scripts and the quickstart.

Written against the restorer contract (``archs/restorer_arch.py``): every function works on any network that
implements :class:`VQRestorer`, per codebook, using only what its bottlenecks declare.
"""
import numpy as np
import torch

from basicsr_sinca.archs.bottleneck_arch import nearest_code_indices

__all__ = [
    'codebook_usage', 'index_accuracy', 'predicted_indices', 'attention_split', 'plot_attention_split',
    'plot_attention_maps', 'plot_code_stats', 'load_for_analysis', 'to_uint8', 'image_grid', 'get_pyplot',
    'save_figure', 'add_analysis_args', 'iterate_pairs', 'parse_decode_kwargs', 'check_decode_kwargs'
]


def codebook_usage(indices, codebook_size):
    """Fraction of the ``codebook_size`` codes selected at least once in ``indices`` (any shape, int)."""
    used = torch.unique(torch.as_tensor(indices).reshape(-1))
    if used.numel() and (used.min() < 0 or used.max() >= codebook_size):
        raise ValueError(f'codebook_usage: indices outside [0, {codebook_size})')
    return used.numel() / codebook_size


def index_accuracy(pred, target):
    """Fraction of positions where ``pred`` equals ``target`` (same shape)."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f'index_accuracy: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}')
    return (pred == target).double().mean().item()


def predicted_indices(net, output):
    """Per codebook, the codes the bottleneck selects, or the nearest codes of a continuous output (B, h, w)."""
    preds = []
    for bottleneck, out, codebook in zip(net.bottlenecks, output.bottlenecks, net.codebooks):
        preds.append(out.indices if bottleneck.selects_codes else nearest_code_indices(out.feat, codebook)[0])
    return preds


@torch.no_grad()
def attention_split(net, latents):
    """Per codebook: None for a bottleneck without attention, else per layer the mean attention mass on the LQ
    tokens (``'self'``) and on the codebook (``'codebook'``), over images, heads and queries."""
    splits = []
    for bottleneck, latent, codebook in zip(net.bottlenecks, latents, net.codebooks):
        if not bottleneck.has_attention:
            splits.append(None)
            continue
        layers = bottleneck(latent, codebook, return_attn_split=True).attn_split
        splits.append([{'self': float(d['self'].mean()), 'codebook': float(d['codebook'].mean())} for d in layers])
    return splits


def get_pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_attention_split(splits, path, title='Attention mass per layer'):
    """Stacked bars: self vs codebook mass per layer (one dict per layer, or {label: list} for several models)."""
    plt = get_pyplot()
    series = splits if isinstance(splits, dict) else {'': splits}
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series) + 1, 3), squeeze=False)
    for ax, (label, layers) in zip(axes[0], series.items()):
        idx = np.arange(1, len(layers) + 1)
        self_mass = np.array([d['self'] for d in layers])
        ax.bar(idx, self_mass, color='tab:blue', label='LQ tokens (self)')
        ax.bar(idx, 1 - self_mass, bottom=self_mass, color='tab:orange', label='codebook')
        ax.set_xticks(idx)
        ax.set_ylim(0, 1)
        ax.set_xlabel('layer')
        ax.set_title(label or title, fontsize=9)
    axes[0][0].set_ylabel('attention mass')
    axes[0][-1].legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    save_figure(fig, path)


def plot_attention_maps(image, maps, hw, query_index, path, mode='sinca'):
    """Paper Fig. 7 style: for one query, per layer the attention over the LQ tokens (heat map) and the
    sorted attention over the codebook items; heads averaged.

    Args:
        image (ndarray): HWC RGB [0, 1] LQ image, shown with the query marked.
        maps (list[Tensor]): From ``SinCATransformer.attention_maps`` for one query: (1, heads, 1, K) per layer.
        hw (tuple[int]): Latent (H, W).
        query_index (int): Row-major query position.
        mode (str): ``'sinca'`` (keys: tokens, then codes), ``'sa'`` (tokens) or ``'ca'`` (codes).
    """
    plt = get_pyplot()
    h, w = hw
    n_self = 0 if mode == 'ca' else h * w
    fig, axes = plt.subplots(2, len(maps) + 1, figsize=(2.2 * (len(maps) + 1), 4.4), squeeze=False)
    axes[0][0].imshow(np.clip(image, 0, 1))
    qy, qx = divmod(query_index, w)
    sy, sx = image.shape[0] / h, image.shape[1] / w
    axes[0][0].add_patch(plt.Rectangle((qx * sx, qy * sy), sx, sy, fill=False, color='red', linewidth=1.5))
    axes[0][0].set_title('LQ + query', fontsize=8)
    axes[1][0].axis('off')
    for i, m in enumerate(maps):
        weights = m[0, :, 0].mean(0).cpu().numpy()
        self_part, code_part = weights[:n_self], weights[n_self:]
        ax = axes[0][i + 1]
        if n_self:
            ax.imshow(self_part.reshape(h, w), cmap='viridis')
        ax.set_title(f'layer {i + 1}: self {self_part.sum():.2f}', fontsize=8)
        ax.axis('off')
        ax2 = axes[1][i + 1]
        if code_part.size:
            ax2.plot(np.sort(code_part)[::-1], color='tab:orange')
        ax2.set_title(f'codebook {code_part.sum():.2f}', fontsize=8)
        ax2.tick_params(labelsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def plot_code_stats(stats, path):
    """Bars of code-index accuracy and codebook usage (``{label: {'accuracy': a, 'usage': u}}``)."""
    plt = get_pyplot()
    labels = list(stats)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3))
    ax.bar(x - 0.2, [stats[k]['accuracy'] for k in labels], 0.4, label='index accuracy vs GT codes')
    ax.bar(x + 0.2, [stats[k]['usage'] for k in labels], 0.4, label='codebook usage')
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path):
    import io

    from basicsr_sinca.utils.file_io import atomic_open
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    get_pyplot().close(fig)
    with atomic_open(path, 'wb') as f:
        f.write(buf.getvalue())


def load_for_analysis(opt_path, model_path, param_key=None, prior_path=None, dataset_key=None,
                      device='cpu'):
    """Network, HQ prior and evaluation dataset described by a training/test option file.

    Args:
        opt_path (str): Option file (its ``network_g``, ``network_hq`` if any and one ``datasets`` entry are used).
        model_path (str): Trained checkpoint of ``network_g``.
        param_key (str | None): Key in the checkpoint (an error if absent); None: ``params_ema``, else ``params``.
        prior_path (str | None): HQ prior; default ``path.pretrain_network_hq`` of the options (not needed when
            the network carries its prior).
        dataset_key (str | None): Entry of ``datasets`` (default: ``val``, else the first ``test_*``).

    Returns:
        tuple: (network in eval mode, its frozen :class:`HQPrior`, dataset)
    """
    from basicsr.data import build_dataset

    from basicsr_sinca.archs.restorer_arch import VQRestorer
    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import OptionError, load_options
    opt = load_options(opt_path)
    net = build_net_from_options(opt_path)
    if not isinstance(net, VQRestorer):
        raise OptionError(f"{opt_path}: network_g.type {opt['network_g']['type']} does not implement the restorer "
                          'contract (basicsr_sinca.archs.restorer_arch.VQRestorer)')
    state_dict, used = read_state_dict(model_path, param_key or 'params_ema',
                                       ('params_ema', 'params') if param_key is None else ())
    load_state_dict_report(net, state_dict, strict=True, source=f'{model_path} [{used}]')
    net = net.to(device).eval()
    path_opt = opt.get('path') or {}
    prior_path = prior_path or path_opt.get('pretrain_network_hq')
    prior = net.build_prior(prior_path, opt.get('network_hq'), path_opt.get('param_key_hq')).to(device)
    datasets = opt.get('datasets') or {}
    key = dataset_key or ('val' if 'val' in datasets else next((k for k in datasets if k.startswith('test')), None))
    if key not in datasets:
        raise OptionError(f'{opt_path}: datasets.{key} not found (have: {sorted(datasets)})')
    ds_opt = dict(datasets[key], phase='val')
    if 'scale' in opt:
        ds_opt['scale'] = opt['scale']
    return net, prior, build_dataset(ds_opt)


def to_uint8(tensor, image_range):
    """(1, 3, H, W) in ``image_range`` -> HWC BGR uint8."""
    from basicsr_sinca.utils.inference import output2img
    return output2img(tensor, image_range)


def image_grid(rows, labels, scale=2):
    """Rows of equally sized HWC BGR uint8 images -> one labelled grid (nearest upscaling by ``scale``)."""
    import cv2
    h, w = rows[0][0].shape[:2]
    cell_w, cell_h, head = w * scale, h * scale, 18
    grid = np.full((head + cell_h * len(rows), cell_w * len(labels), 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(grid, label[:max(1, cell_w // 7)], (j * cell_w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            big = cv2.resize(img, (cell_w, cell_h), interpolation=cv2.INTER_NEAREST)
            grid[head + i * cell_h:head + (i + 1) * cell_h, j * cell_w:(j + 1) * cell_w] = big
    return grid


def add_analysis_args(parser):
    """The command-line arguments shared by the analysis scripts."""
    parser.add_argument('--opt', required=True, help='option file of the model (network_g and a dataset)')
    parser.add_argument('--model_path', required=True, help='trained checkpoint')
    parser.add_argument('--param_key', default=None,
                        help='key in the checkpoint; a key the file lacks is an error (default: params_ema, else '
                        'params)')
    parser.add_argument('--prior', default=None,
                        help='HQ prior checkpoint (default: path.pretrain_network_hq of the option file)')
    parser.add_argument('--dataset', default=None, help='entry of `datasets` to use (default: val, else test_1)')
    parser.add_argument('--max_images', type=int, default=0, help='use at most this many images (0: all)')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")


def iterate_pairs(dataset, device, max_images=0):
    """(lq, gt, name) per dataset item, batched as (1, 3, H, W), with a progress bar."""
    from tqdm import tqdm
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    for i in tqdm(range(n), desc='images', unit='img'):
        item = dataset[i]
        yield item['lq'][None].to(device), item['gt'][None].to(device), item.get('lq_path', str(i))


def parse_decode_kwargs(entries):
    """``['w=0.5', 'adain=true']`` -> ``{'w': 0.5, 'adain': True}`` (values parsed as YAML)."""
    import yaml
    out = {}
    for entry in entries or []:
        key, sep, value = entry.partition('=')
        if not sep or not key.strip():
            raise ValueError(f'--decode {entry!r}: expected KEY=VALUE')
        out[key.strip()] = yaml.safe_load(value)
    return out


def check_decode_kwargs(net, decode_kwargs):
    """Raise ValueError naming the keys of ``decode_kwargs`` that ``net.decode`` does not take."""
    import inspect
    params = inspect.signature(net.decode).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [k for k in list(params)[2:] if params[k].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in decode_kwargs if k not in known and not takes_any]
    if unknown:
        raise ValueError(f'--decode {unknown}: {type(net).__name__}.decode takes {known or "no options"}')
