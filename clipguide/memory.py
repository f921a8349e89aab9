"""How much memory a run will need, estimated before anything big is allocated.

Activation memory is measured, not guessed: the decoder and each CLIP run once at a tiny size with
saved-tensor hooks counting what autograd keeps for the backward pass; activations grow with the
canvas area (decoder) and the number of cutouts (CLIP), so the measurement is scaled up."""

from __future__ import annotations

import torch



def _saved_bytes(fn, module) -> int:
    """Bytes of the distinct storages autograd saves while running `fn`, the module's weights excepted."""
    weights = {t.untyped_storage().data_ptr() for t in module.state_dict().values()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def estimator(vqgan, clips, cutn: int):
    """Probe the models once; return `need(batch, latent_hw)`: bytes of parameters plus activations kept
    for backward (and slack for gradients, optimiser state and the allocator) for `batch` images of an
    h x w latent."""
    device = vqgan.codebook.device
    params = sum(p.numel() * p.element_size() for m in [vqgan] + [c.model for c in clips] for p in m.parameters())
    probe = 2
    z = torch.zeros(1, vqgan.codebook.shape[1], probe, probe, device=device, requires_grad=True)
    decoder = _saved_bytes(lambda: vqgan.decode(z), vqgan) / (probe * probe)  # per latent cell
    per_cut = 0
    for c in clips:
        x = torch.zeros(1, 3, c.image_size, c.image_size, device=device, requires_grad=True)
        per_cut += _saved_bytes(lambda: c.encode_image(x), c.model)

    def need(batch: int, latent_hw: tuple[int, int]) -> int:
        cells = latent_hw[0] * latent_hw[1]
        image = 3 * 4 * cells * vqgan.factor ** 2
        return int((params + (decoder * cells + per_cut * cutn) * batch) * 1.3 + image * batch * 4)

    return need


def largest_fitting(need, batch: int, latent_hw: tuple[int, int], have: int) -> tuple[int, int] | None:
    """The largest latent (same aspect, at least 1 x 1) whose run of `batch` images needs at most
    `have` bytes, or None if not even the smallest does.  (The bisection's scale falls below 1/h
    within 30 halvings, so 1 x 1 is tried whenever nothing larger fits.)"""
    h, w = latent_hw
    best, lo, hi = None, 0.0, 1.0
    for _ in range(30):  # bisect the scale
        mid = (lo + hi) / 2
        size = (max(1, int(h * mid)), max(1, int(w * mid)))
        if need(batch, size) <= have:
            best, lo = size, mid
        else:
            hi = mid
    return best


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None  # no /proc: no estimate of free memory
