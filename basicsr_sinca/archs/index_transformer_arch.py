"""CodeFormer's code-index prediction transformer as the ``index`` bottleneck.

CodeFormer and DAEFR use the same transformer (learned position table, nine pre-norm self-attention layers,
LayerNorm + bias-free linear head) to predict one code index per latent position; the decoder gets the top-1
codebook rows. Its parameters keep the official names (``position_emb``, ``feat_emb``, ``ft_layers``,
``idx_pred_layer``); released checkpoints store them at the top level, which
:func:`map_official_index_keys` moves under the network's bottleneck. Facts (names, shapes, data flow) come
follow the official release (checked in ``tests/archs/test_codeformer_arch.py``); the code is ours.
"""
import torch
import torch.nn.functional as F
from torch import nn

from basicsr_sinca.archs.bottleneck_arch import Bottleneck, BottleneckOutput, lookup_codes
from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY

__all__ = ['CodeFormerSALayer', 'CodeFormerIndexTransformer', 'OFFICIAL_INDEX_KEYS', 'map_official_index_keys',
           'official_index_key_names']

# top-level names of the index transformer inside codeformer.pth / DAEFR_model.ckpt
OFFICIAL_INDEX_KEYS = ('position_emb', 'feat_emb.', 'ft_layers.', 'idx_pred_layer.')


def map_official_index_keys(state_dict, prefix, target, keys=OFFICIAL_INDEX_KEYS):
    """Move the official top-level index-head keys of ``state_dict`` (names starting with one of ``keys``) under
    ``prefix + target + '.'``."""
    for key in list(state_dict):
        if key.startswith(prefix) and key[len(prefix):].startswith(keys):
            state_dict[f'{prefix}{target}.{key[len(prefix):]}'] = state_dict.pop(key)


def official_index_key_names(module, state_dict, prefix, local_metadata):
    """State-dict post-hook of the official networks: the ``bottleneck.`` keys back at the top level."""
    inner = f'{prefix}bottleneck.'
    items = list(state_dict.items())
    state_dict.clear()  # re-inserted in order, so the official names keep the official positions
    for key, value in items:
        state_dict[prefix + key[len(inner):] if key.startswith(inner) else key] = value


class CodeFormerSALayer(nn.Module):
    """CodeFormer's pre-norm self-attention layer (sequence-first; positions added to queries and keys only).

    Args:
        embed_dim (int): Channels. Default: 512.
        nhead (int): Heads. Default: 8.
        dim_mlp (int): MLP hidden size. Default: 1024.
        dropout (float): Dropout. Default: 0.0.
    """

    def __init__(self, embed_dim=512, nhead=8, dim_mlp=1024, dropout=0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, nhead, dropout=dropout)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x, query_pos=None):
        """(N, B, C) tokens and (N, B or 1, C) positions -> (N, B, C)."""
        h = self.norm1(x)
        qk = h if query_pos is None else h + query_pos
        x = x + self.dropout1(self.self_attn(qk, qk, value=h, need_weights=False)[0])
        h = self.norm2(x)
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(h)))))


class CodeFormerIndexTransformer(Bottleneck):
    """Bottleneck ``index``: CodeFormer's transformer predicts code indices; the decoder gets the top-1 rows.

    Args:
        dim_embd (int): Transformer channels. Default: 512.
        n_head (int): Heads. Default: 8.
        n_layers (int): Layers. Default: 9.
        codebook_size (int): Logits per token. Default: 1024.
        latent_size (int): Tokens H·W (length of the learned position table). Default: 256.
        latent_dim (int): Latent channels. Default: 256.
    """

    predicts_logits = True
    selects_codes = True

    def __init__(self, dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, latent_size=256, latent_dim=256):
        super().__init__(latent_dim, codebook_size)
        self.latent_size = latent_size
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(latent_dim, dim_embd)
        self.ft_layers = nn.Sequential(
            *[CodeFormerSALayer(dim_embd, n_head, dim_embd * 2, 0.0) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))

    def logits(self, lq_feat):
        """(B, C, H, W) latent with H·W = ``latent_size`` -> code logits (B, H·W, codebook_size)."""
        b, c, h, w = lq_feat.shape
        if c != self.dim or h * w != self.latent_size:
            raise ValueError(f'index bottleneck: latent of shape {tuple(lq_feat.shape)} does not match its position '
                             f'table ({self.latent_size} tokens of {self.dim} channels); CodeFormer\'s index '
                             'transformer only works at the training resolution')
        pos = self.position_emb.unsqueeze(1)
        x = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        for layer in self.ft_layers:
            x = layer(x, query_pos=pos)
        return self.idx_pred_layer(x).permute(1, 0, 2)

    def forward(self, lq_feat, codebook, return_attn_split=False):
        self.check_inputs(lq_feat, codebook, return_attn_split)
        logits = self.logits(lq_feat)
        b, _, h, w = lq_feat.shape
        indices = logits.argmax(dim=-1).reshape(b, h, w)
        return BottleneckOutput(lookup_codes(indices, codebook.detach()), logits=logits, indices=indices)


@BOTTLENECK_REGISTRY.register()
def index(dim, codebook_size, dim_embd=512, n_head=8, n_layers=9, latent_size=None, latent_hw=None):
    """CodeFormer's own index-prediction transformer; ``latent_size`` defaults to the network's latent H·W."""
    if latent_size is None:
        if latent_hw is None:
            raise ValueError("index bottleneck: set 'latent_size' (tokens of the position table, H·W)")
        latent_size = latent_hw[0] * latent_hw[1]
    return CodeFormerIndexTransformer(dim_embd, n_head, n_layers, codebook_size, latent_size, latent_dim=dim)
