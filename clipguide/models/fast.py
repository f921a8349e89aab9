"""The fast path: changes to loaded models that make a guidance step cheaper without changing its result.

Call after loading, before the first step::

    clip = fast.prepare_clip(clip, device)      # a models.clip.Clip or a bare open_clip model
    vqgan = fast.prepare_vqgan(vqgan, device)

Each change is numerically equivalent to the original module (float noise, ~1e-6 relative in fp32)
and was kept only because it paid on the machines it was measured on (see docs/benchmark.md):

- Attention: open_clip's blocks use `nn.MultiheadAttention(batch_first=True)`, which transposes to
  [L, N, D] internally, so the in-projection sees a non-contiguous view and its backward becomes a
  `bmm` against the weight expanded over the sequence.  `FastAttention` runs the in-projection as
  one `F.linear` on the contiguous [N, L, D] tensor and the attention as
  `F.scaled_dot_product_attention`.  Anything it does not cover (cross-attention, key padding
  masks, attention weights, dropout in training) goes to the original forward.
- Class token only: the image tower pools token 0, so its last block computes that token alone
  (keys and values still from every token); the other 49 outputs of ViT-B-32 were thrown away.
- Patch embedding (CPU): the ViT's stride == kernel convolution is one matmul over the image's
  patches; as a convolution its backward to the input ran on a slow path.
- Frozen weights: every parameter gets `requires_grad=False`, so no weight gradient is computed.
- On CUDA only, and only when asked (`compile=True`): `torch.compile` of the image tower and the
  decoder, with a fallback to eager when compiling fails.  Unmeasured (no GPU was available).

Measured on CPU and not kept: channels_last for the VQGAN decoder, and batch-1 small convolutions
as unfold + one matmul (PyTorch runs those on its single-threaded `_slow_conv2d`): neither was faster.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, Transformer
from torch import nn


class FastAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` with a contiguous-layout self-attention path (same weights, same keys)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        fast = (query is key and key is value and key_padding_mask is None and not need_weights
                and self._qkv_same_embed_dim and self.bias_k is None and not self.add_zero_attn
                and (self.dropout == 0.0 or not self.training) and query.dim() == 3
                and (attn_mask is None or attn_mask.dim() == 2))
        if not fast:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        x = query if self.batch_first else query.transpose(0, 1)  # [N, L, D]
        n, length, dim = x.shape
        heads = self.num_heads
        qkv = F.linear(x.reshape(n * length, dim), self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if attn_mask is not None and attn_mask.dtype == torch.bool:  # MHA: True = masked out
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill_(attn_mask, float("-inf"))
        elif attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             is_causal=bool(is_causal and attn_mask is None))
        out = out.transpose(1, 2).reshape(n * length, dim)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias).view(n, length, dim)
        return (out if self.batch_first else out.transpose(0, 1)), None


class PatchEmbed(nn.Conv2d):
    """A stride == kernel, unpadded `nn.Conv2d` computed as one matmul over the image's patches."""

    def forward(self, x):
        ph, pw = self.kernel_size
        if not _is_patchify(self) or x.dim() != 4:
            return super().forward(x)
        n, c, h, w = x.shape
        gh, gw = h // ph, w // pw
        x = x[:, :, :gh * ph, :gw * pw]  # a convolution drops the ragged edge too
        patches = x.reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(n * gh * gw, c * ph * pw)
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.view(n, gh, gw, self.out_channels).permute(0, 3, 1, 2)


def _first_token_only(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ResidualAttentionBlock's output [N, 1, D] for token 0 only (keys and values from every token)."""
    n, length, dim = x.shape
    attn, heads = block.attn, block.attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    y = block.ln_1(x)
    q = F.linear(y[:, 0], w[:dim], None if b is None else b[:dim]).view(n, heads, 1, dim // heads)
    kv = F.linear(y.reshape(n * length, dim), w[dim:], None if b is None else b[dim:])
    k, v = kv.view(n, length, 2, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v).reshape(n, dim)
    x = x[:, :1] + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias)[:, None])
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class FirstTokenTransformer(Transformer):
    """Class of an open_clip image transformer whose pooled output reads token 0 only: the last
    block computes that token alone (its other 49 outputs would be thrown away) and the output is
    [N, 1, D].  Set by `first_token_only`, which checks that nothing else reads the other tokens."""

    def forward(self, x, attn_mask=None):
        if attn_mask is not None or self.grad_checkpointing or not self.batch_first:
            return super().forward(x, attn_mask)
        for block in self.resblocks[:-1]:
            x = block(x)
        return _first_token_only(self.resblocks[-1], x)


def first_token_only(model: nn.Module) -> bool:
    """Let the image tower compute only the class token in its last block, where that is all it pools."""
    visual = getattr(model, "visual", None)
    tr = getattr(visual, "transformer", None)
    blocks = getattr(tr, "resblocks", None)
    ok = (type(tr) is Transformer and len(blocks) > 0 and getattr(visual, "pool_type", None) == "tok"
          and getattr(visual, "attn_pool", 1) is None and not getattr(visual, "output_tokens", True)
          and tr.batch_first and type(blocks[-1]) is ResidualAttentionBlock
          and not hasattr(blocks[-1], "ln_1_kv") and isinstance(blocks[-1].attn, nn.MultiheadAttention)
          and blocks[-1].attn._qkv_same_embed_dim and blocks[-1].attn.bias_k is None)
    if ok:
        tr.__class__ = FirstTokenTransformer
    return ok


def _is_patchify(conv: nn.Conv2d) -> bool:
    return (tuple(conv.stride) == tuple(conv.kernel_size) and conv.padding in ((0, 0), 0, "valid")
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def fast_attention(model: nn.Module) -> int:
    """Turn every plain `nn.MultiheadAttention` in `model` into a `FastAttention` (in place); returns the count."""
    count = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = FastAttention
            count += 1
    return count


def fast_patch_embed(model: nn.Module) -> int:
    """Turn the ViT patch-embedding convolution(s) into `PatchEmbed` (in place); returns the count."""
    count = 0
    visual = getattr(model, "visual", model)
    for module in visual.modules():
        if type(module) is nn.Conv2d and _is_patchify(module) and module.kernel_size[0] > 1:
            module.__class__ = PatchEmbed
            count += 1
    return count


def freeze(model: nn.Module) -> nn.Module:
    """No parameter of a guidance model ever needs a gradient: only the latent does."""
    return model.requires_grad_(False)


class _CompiledForward:
    """Calls `torch.compile(forward)`; on the first failure warns once and stays on the eager forward."""

    def __init__(self, module: nn.Module, name: str):
        self.eager = module.forward
        self.name = name
        self.compiled = torch.compile(self.eager, dynamic=False)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # compilers fail in many ways; eager always works
                self.failed = True
                warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: {str(e)[:200]}); "
                              "running it eagerly", RuntimeWarning, stacklevel=2)
        return self.eager(*args, **kwargs)


def compile_forward(module: nn.Module, name: str) -> bool:
    """Compile `module.forward` in place, with a clean fallback to eager; False if torch.compile is missing."""
    if not hasattr(torch, "compile") or isinstance(module.forward, _CompiledForward):
        return False
    try:
        module.forward = _CompiledForward(module, name)
    except Exception as e:  # e.g. no compiler support for this Python
        warnings.warn(f"cannot compile {name} ({type(e).__name__}); running it eagerly", RuntimeWarning, stacklevel=2)
        return False
    return True


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def prepare_clip(clip, device="cpu", *, compile: bool = False, attention: bool = True, first_token: bool = True,
                 patch_embed: bool | None = None):
    """Apply the fast path to a CLIP (a `models.clip.Clip`, or an open_clip model) in place; returns it.

    `patch_embed` defaults to CPU only (where it was measured to pay); `compile=True` compiles the
    image tower with torch.compile, on CUDA only (ignored elsewhere)."""
    model = clip.model if hasattr(clip, "encode_image") and hasattr(clip, "model") else clip
    freeze(model)
    if attention:
        fast_attention(model)
    if first_token:
        first_token_only(model)
    if patch_embed if patch_embed is not None else _device(device).type == "cpu":
        fast_patch_embed(model)
    if compile and _device(device).type == "cuda" and hasattr(model, "visual"):
        compile_forward(model.visual, "the CLIP image tower")
    return clip


def prepare_vqgan(vqgan: nn.Module, device="cpu", *, compile: bool = False) -> nn.Module:
    """Apply the fast path to a VQGAN in place; returns it.

    `compile=True` compiles the decoder with torch.compile, on CUDA only (ignored elsewhere)."""
    freeze(vqgan)
    if compile and _device(device).type == "cuda":
        compile_forward(vqgan.decoder, "the VQGAN decoder")
    return vqgan
