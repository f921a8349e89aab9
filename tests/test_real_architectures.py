"""The real architectures (OpenAI ViT-B-32 and ImageNet VQGAN f16-16384), random weights in local files."""

import open_clip
import torch
from PIL import Image

from clipguide import generate
from clipguide.models.registry import HERE
from clipguide.models.vqgan import read_config, vqgan_from_config
from clipguide.outputs.pictures import read_recipe
from models import lightning_ckpt


def test_a_64px_run_with_vit_b_32_and_f16_16384_from_local_files(tmp_path):
    torch.manual_seed(0)
    cfg = HERE / "configs" / "vqgan_imagenet_f16_16384.yaml"
    vqgan = vqgan_from_config(read_config(cfg))
    lightning_ckpt(vqgan.state_dict(), tmp_path / "last.ckpt")
    del vqgan
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(clip.state_dict(), tmp_path / "vit-b-32.pt")
    del clip
    result = generate("a painting of a dog", seed=0, steps=2, width=64, height=64, cutn=2,
                      vqgan=str(tmp_path / "last.ckpt"), vqgan_config=str(cfg),
                      clip=[f"ViT-B-32:{tmp_path / 'vit-b-32.pt'}"], state_every=0)
    assert Image.open(result.outputs[0]).size == (64, 64)
    recipe = read_recipe(result.outputs[0])
    assert recipe["clip"][0]["spec"].startswith("ViT-B-32:") and len(recipe["clip"][0]["sha256"]) == 64
