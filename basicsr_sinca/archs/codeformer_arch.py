"""CodeFormer family (state-dict compatible with the official release).

This file holds only what is specific to CodeFormer. Key names and shapes follow the released checkpoints
(``vqgan_code1024.pth``, ``codeformer.pth``); see ``shared/reference/codeformer_daefr.md``.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['CodeFormerSALayer', 'CodeFormerIndexTransformer']


class CodeFormerSALayer(nn.Module):
    """CodeFormer's pre-norm self-attention layer (sequence-first, position added to queries and keys only).

    Args:
        embed_dim (int): Channels. Default: 512.
        nhead (int): Heads. Default: 8.
        dim_mlp (int): Hidden size of the MLP. Default: 1024.
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
        """(N, B, C) tokens and (N, B, C) or (N, 1, C) positions -> (N, B, C)."""
        h = self.norm1(x)
        qk = h if query_pos is None else h + query_pos
        x = x + self.dropout1(self.self_attn(qk, qk, value=h, need_weights=False)[0])
        h = self.norm2(x)
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(h)))))


class CodeFormerIndexTransformer(nn.Module):
    """CodeFormer's code-index prediction transformer (keys ``position_emb``, ``feat_emb``, ``ft_layers``,
    ``idx_pred_layer`` as in ``codeformer.pth``).

    Args:
        dim_embd (int): Transformer channels. Default: 512.
        n_head (int): Heads. Default: 8.
        n_layers (int): Layers. Default: 9.
        codebook_size (int): Logits per token. Default: 1024.
        latent_size (int): Tokens (H·W of the latent; the learned position table has this length). Default: 256.
        latent_dim (int): Latent channels. Default: 256.
    """

    def __init__(self, dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, latent_size=256, latent_dim=256):
        super().__init__()
        self.latent_size, self.latent_dim = latent_size, latent_dim
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(latent_dim, dim_embd)
        self.ft_layers = nn.Sequential(
            *[CodeFormerSALayer(dim_embd, n_head, dim_embd * 2, 0.0) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))

    def forward(self, lq_feat):
        """(B, C, H, W) latent with H·W = ``latent_size`` -> logits (B, H·W, codebook_size)."""
        b, c, h, w = lq_feat.shape
        if c != self.latent_dim or h * w != self.latent_size:
            raise ValueError(f'CodeFormer index transformer: latent of shape {tuple(lq_feat.shape)} does not match '
                             f'its position table ({self.latent_size} tokens of {self.latent_dim} channels)')
        pos = self.position_emb.unsqueeze(1)
        x = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        for layer in self.ft_layers:
            x = layer(x, query_pos=pos)
        return self.idx_pred_layer(x).permute(1, 0, 2)
