"""Start-up work that is not needed is skipped, and what is loaded is the same as before (issue 18)."""

import torch
from torch import nn

from clipguide.models import factory
from clipguide.models.clip import load_clip
from clipguide.models.vqgan import load_vqgan, read_config, vqgan_from_config
from clipguide.models.checkpoint import load_weights, state_dict_of


def test_a_vqgan_is_loaded_without_random_init_to_the_same_numbers(tiny):
    cfg, ckpt = tiny["vq"]
    model = load_vqgan(cfg, ckpt)
    ref = vqgan_from_config(read_config(cfg))
    ref.load_state_dict({k: v for k, v in state_dict_of(load_weights(ckpt)).items() if not k.startswith("loss.")})
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v) and got[k].dtype == v.dtype and got[k].is_contiguous(), k
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not any(p.requires_grad for p in model.parameters())


def test_a_clip_is_loaded_without_random_init_to_the_same_numbers(tiny):
    spec = f"local-dir:{tiny['clip']}"
    got = factory._load_clip(spec, torch.device("cpu"), None).model.state_dict()
    want = load_clip(spec).model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert torch.nn.init.normal_ is not None and torch.nn.init.normal_.__name__ == "normal_"  # put back


def test_a_weight_the_file_did_not_set_is_noticed():
    with factory._unset_init() as filled:
        layer = nn.Linear(3, 2)
    assert filled and all(t.isnan().all() for t in filled)
    layer.load_state_dict({"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
    assert factory._all_loaded(filled)
    with factory._unset_init() as filled:
        layer = nn.Linear(3, 2)
    layer.weight.data.fill_(1.0)  # the bias was never loaded
    assert not factory._all_loaded(filled)
