"""The generation behaviour users rely on, through the Python API, on tiny random models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipguide import Session, Settings, generate
from clipguide.engine import make_optimizer, optimize
from clipguide.errors import UserError
from clipguide.outputs.pictures import read_recipe


def pixels(path):
    return np.asarray(Image.open(path))


def test_tv_weight_smooths_the_picture_and_is_recorded(tiny_args):
    from clipguide.guide.losses import tv_loss

    def tv(path):
        return tv_loss(torch.from_numpy(pixels(path).copy()).float().movedim(-1, 0)[None] / 255, 1.0).item()

    args = tiny_args | {"steps": 30, "lr": 0.3}
    rough = generate("a dog", seed=2, output="rough.png", **args).outputs[0]
    smooth = generate("a dog", seed=2, output="smooth.png", tv_weight=20.0, **args).outputs[0]
    assert tv(smooth) < 0.8 * tv(rough)
    assert read_recipe(smooth)["tv_weight"] == 20.0 and read_recipe(rough)["tv_weight"] == 0.0


def test_loss_decreases_over_steps_on_a_fixed_seed(tiny_args):
    session = Session(Settings(prompt="a red circle", **(tiny_args | {"cutn": 8, "lr": 0.2, "augments": "none",
                                                                                 "noise": 0.0})), log=lambda m: None)
    job = session.plan.job("a red circle", 3, Path("unused.png"))
    z, _ = session.pipeline([job]).initial_latents([3])
    objective = session.objective([job])
    z.requires_grad_(True)
    torch.manual_seed(3)
    losses = []
    optimize(objective, z, make_optimizer("adam", [z], 0.2), 40, latent_range=session.vqgan.latent_range(),
             callback=lambda info: losses.append(info.loss.item()))
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.01
    assert losses[-1] < losses[0]


def test_same_seed_gives_the_same_image_and_another_seed_another(tiny_args):
    a = generate("a dog", seed=7, output="a.png", **tiny_args)
    b = generate("a dog", seed=7, output="b.png", **tiny_args)
    c = generate("a dog", seed=8, output="c.png", **tiny_args)
    assert np.array_equal(pixels(a.outputs[0]), pixels(b.outputs[0]))
    assert not np.array_equal(pixels(a.outputs[0]), pixels(c.outputs[0]))


def test_png_carries_its_recipe(tiny_args, tiny):
    result = generate("a dog:2 | a cat:-1", seed=5, **tiny_args)
    assert result.outputs == [Path("outputs/a-dog-2-a-cat-1-5.png")]
    recipe = read_recipe(result.outputs[0])
    assert recipe["prompt"] == "a dog:2 | a cat:-1" and recipe["seed"] == 5 and recipe["steps"] == 5
    assert (recipe["width"], recipe["height"]) == (32, 32)
    assert recipe["vqgan"]["name"] == "last" and len(recipe["vqgan"]["sha256"]) == 64
    assert recipe["clip"][0]["spec"] == f"local-dir:{tiny['clip']}" and len(recipe["clip"][0]["sha256"]) == 64
    assert recipe["version"] and recipe["augments"] == "affine,perspective,jitter,erasing"


def test_sizes_round_down_to_the_vqgan_factor_and_say_so(tiny_args):
    said = []
    result = generate("a dog", seed=1, log=said.append, **(tiny_args | {"width": 39, "height": 30}))
    assert Image.open(result.outputs[0]).size == (36, 28)
    assert any("rounded down to 36x28" in m for m in said)


def test_frames_and_video_have_one_frame_per_save(tiny_args):
    result = generate("a dog", seed=1, video="v.mp4", frames_dir="frames", save_every=2,
                      **(tiny_args | {"steps": 7}))
    assert sorted(p.name for p in Path("frames").iterdir()) == ["00000.png", "00002.png", "00004.png", "00006.png"]
    assert result.videos == [Path("v.mp4")]
    import imageio.v2 as iio2

    with iio2.get_reader("v.mp4") as reader:
        assert reader.count_frames() == 4


def test_gif_video(tiny_args):
    import imageio.v3 as iio

    generate("a dog", seed=1, video="v.gif", save_every=1, fps=10, **(tiny_args | {"steps": 3}))
    frames = iio.imread("v.gif", index=None)
    durations = _gif_durations("v.gif")
    assert frames.shape[1:3] == (32, 32)
    assert sum(durations) == 300  # 3 frames at 10 fps (identical neighbours may be merged by GIF)


def _gif_durations(path):
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(im.info["duration"])
        return out


def test_n_images_are_made_together_from_consecutive_seeds(tiny_args):
    result = generate("a dog", seed=10, n_images=3, **tiny_args)
    assert [p.name for p in result.outputs] == ["a-dog-10.png", "a-dog-11.png", "a-dog-12.png"]
    assert [read_recipe(p)["seed"] for p in result.outputs] == [10, 11, 12]
    assert not np.array_equal(pixels(result.outputs[0]), pixels(result.outputs[1]))


def distance_to(path, picture) -> float:
    """Mean RGB distance (0..1) between a made PNG and a picture of the same size."""
    return float(np.abs(pixels(path).astype(float) - picture.astype(float)).mean() / 255)


def world_picture():
    """A picture of the tiny model's world: a yellow square on green, 64x64."""
    pic = np.zeros((64, 64, 3), np.uint8)
    pic[:] = (0, 200, 0)
    pic[20:44, 20:44] = (230, 230, 0)
    return pic


def test_generate_refuses_what_it_would_silently_skip(tiny_args):
    """generate draws still pictures: a restyle or a preview asked of it is refused, not skipped, and so
    is an option that would change nothing (the same check as the command line's)."""
    from clipguide.errors import UserError

    for extra, phrase in [({"preview": 2}, "runs no restyle_video or preview"),
                          ({"restyle_video": "in.mp4"}, "runs no restyle_video or preview"),
                          ({"fps": 5.0}, "--fps has no effect in this run")]:
        with pytest.raises(UserError, match=phrase):
            generate("a dog", seed=1, **(tiny_args | extra))
    assert not list(Path(".").rglob("*.png"))


def test_init_image_starts_from_that_picture_and_init_weight_keeps_it_near():
    """With the tiny model: one step from an init image is near that picture, one step from random
    codes is not; and over 20 steps --init-weight keeps the picture near it where no weight lets the
    prompt carry it away (each distance at least halves)."""
    pic = world_picture()
    Image.fromarray(pic).save("init.png")
    args = dict(model="tiny", seed=1)
    one = generate("a red circle", output="one.png", init_image="init.png", steps=1, **args)
    plain = generate("a red circle", output="plain.png", candidates=1, steps=1, **args)
    assert distance_to(one.outputs[0], pic) < 0.5 * distance_to(plain.outputs[0], pic)
    free = generate("a red circle", output="free.png", init_image="init.png", steps=20, **args)
    held = generate("a red circle", output="held.png", init_image="init.png", init_weight=100.0, steps=20, **args)
    assert distance_to(held.outputs[0], pic) < 0.5 * distance_to(free.outputs[0], pic)
    recipe = read_recipe(held.outputs[0])
    assert recipe["init_image"] == str(Path("init.png").absolute()) and recipe["init_weight"] == 100.0


def test_image_prompt_steers_the_picture_toward_it():
    """The tiny model asked for nothing but 'a shape' and shown a yellow square on green draws more of
    that picture's colours than the same seed without the image prompt."""
    pic = world_picture()
    Image.fromarray(pic).save("style.png")

    def share(path):  # pixels nearer to the picture's green or yellow than to any other world colour
        from clipguide.tiny import evaluate, world

        labels = evaluate.nearest_colours(pixels(path))
        return float(np.isin(labels, [world.COLOUR_NAMES.index("green"), world.COLOUR_NAMES.index("yellow")]).mean())

    args = dict(model="tiny", steps=60, seed=3, candidates=1, contrast="none")
    steered = generate("a shape", output="steered.png", image_prompts=["style.png:2"], **args)
    plain = generate("a shape", output="plain.png", **args)
    assert share(steered.outputs[0]) > share(plain.outputs[0]) + 0.2
    assert read_recipe(steered.outputs[0])["image_prompts"] == [f"{Path('style.png').absolute()}:2.0"]


def test_an_ensemble_of_clips_sums_their_losses(tiny_args, tiny):
    one = generate("a dog", seed=1, output="one.png", **tiny_args)
    two = generate("a dog", seed=1, output="two.png", **(tiny_args | {"clip": tiny_args["clip"] * 2}))
    assert two.loss[0] > one.loss[0] * 1.5
    assert len(read_recipe(two.outputs[0])["clip"]) == 2


def test_gumbel_vqgan_generates(tiny_args, tiny):
    cfg, ckpt = tiny["gumbel"]
    result = generate("a dog", seed=1, **(tiny_args | {"vqgan": str(ckpt), "vqgan_config": str(cfg)}))
    assert Image.open(result.outputs[0]).size == (32, 32)


def test_story_stages_switch_prompts(tiny_args):
    session = Session(Settings(prompt="a ^ b", **(tiny_args | {"change_every": 2, "blend_steps": 2})),
                      log=lambda m: None)
    objective = session.objective([session.plan.job("a ^ b", 1, Path("x.png"))])
    assert objective.weights(0).tolist() == [[1.0, 0.0]]
    assert objective.weights(2).tolist() == [[0.5, 0.5]]
    assert objective.weights(3).tolist() == [[0.0, 1.0]]


def test_negative_prompts_push_away_in_every_stage_and_are_recorded(tiny_args):
    session = Session(Settings(prompt="a ^ b", negative="c:0.5", **(tiny_args | {"change_every": 2})),
                      log=lambda m: None)
    objective = session.objective([session.plan.job("a ^ b", 1, Path("x.png"))])
    assert objective.weights(0).tolist() == [[1.0, -0.5, 0.0, 0.0]]  # a, c (stage 1); b, c (stage 2)
    assert objective.weights(2).tolist() == [[0.0, 0.0, 1.0, -0.5]]
    targets = objective.members[0].targets[0]
    assert torch.equal(targets[1], targets[3])  # the same text, embedded once
    result = generate("a dog", seed=1, negative="a cat:0.5", **tiny_args)
    assert read_recipe(result.outputs[0])["negative"] == "a cat:0.5"
    assert read_recipe(generate("a dog", seed=1, output="plain.png", **tiny_args).outputs[0])["negative"] == ""


def test_contrast_rules_add_a_swapped_prompt_per_stage_before_the_negatives(tiny_args):
    settings = Settings(prompt="x", negative="c:0.5", contrast="dog=cat:0.3", **(tiny_args | {"change_every": 2}))
    session = Session(settings, log=lambda m: None)
    objective = session.objective([session.plan.job("a dog ^ a tree", 1, Path("x.png"))])
    # a dog, a cat (its contrast), c (negative); a tree (no contrast), c
    assert torch.allclose(objective.weights(0), torch.tensor([[1.0, -0.3, -0.5, 0.0, 0.0]]))
    assert objective.weights(2).tolist() == [[0.0, 0.0, 0.0, 1.0, -0.5]]
    result = generate("a dog", seed=1, contrast="dog=cat:0.3", **tiny_args)
    assert read_recipe(result.outputs[0])["contrast"] == "dog=cat:0.3"


def test_story_stages_share_the_run_by_default(tiny_args):
    session = Session(Settings(prompt="a ^ b ^ c", **(tiny_args | {"steps": 30})), log=lambda m: None)
    objective = session.objective([session.plan.job("a ^ b ^ c", 1, Path("x.png"))])
    assert [objective.weights(i).tolist()[0] for i in (0, 9, 10, 20, 29)] == [
        [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


def test_a_session_without_a_prompt_refuses_single_jobs_and_draws_the_jobs_it_is_given(tiny_args):
    session = Session(Settings(**tiny_args), log=lambda m: None)  # no prompt: models loaded for jobs made later
    with pytest.raises(UserError) as e:
        session.plan.single_jobs(7)
    assert "no prompt" in str(e.value)
    assert "plan.job" in e.value.fix
    for text in (None, "", "  "):
        with pytest.raises(UserError):
            session.plan.job(text, 1, Path("x.png"))
    job = session.plan.job("a dog", 8, Path("dog.png"), stages=())  # no parsed stages: the text is parsed
    assert [[p.text for p in st] for st in job.stages] == [["a dog"]]
    result = session.run([job], progress=False)
    assert result.outputs == [Path("dog.png")]
    assert Image.open("dog.png").size == (32, 32)
