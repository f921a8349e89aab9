"""Memory that grows with the picture, not with its square (issue 34).

What autograd keeps for the backward pass is counted with saved-tensor hooks (`memory._saved_bytes`, the
estimator's own probe), so the checks are exact and do not depend on the allocator or the machine."""

import torch
from taming.modules.diffusionmodules.model import AttnBlock

from clipguide.memory import _saved_bytes
from clipguide.models.vqgan import Attention, load_vqgan


def saved_per_cell(vqgan, side: int) -> float:
    z = vqgan.random_latent(side, side, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    return _saved_bytes(lambda: vqgan.decode(z), vqgan) / side ** 2


def test_the_decoders_attention_keeps_no_cells_by_cells_matrix(tiny):
    """The decoder's middle attention runs over every latent cell.  taming's AttnBlock keeps a cells x cells
    matrix for the backward pass (256 GiB at 512 x 512 cells); clipguide's keeps what grows with the cells, so
    the bytes kept per cell stay the same from 8 x 8 to 48 x 48 cells."""
    vqgan = load_vqgan(*tiny["vq"])
    blocks = [m for m in vqgan.modules() if isinstance(m, AttnBlock)]
    assert blocks and all(type(m) is Attention for m in blocks)
    small, large = saved_per_cell(vqgan, 8), saved_per_cell(vqgan, 48)
    assert large / small < 1.01
    for m in blocks:  # the same decoder with taming's own attention: the square shows
        m.__class__ = AttnBlock
    assert saved_per_cell(vqgan, 48) / saved_per_cell(vqgan, 8) > 1.08  # measured 1.11: the 2304^2 matrix
