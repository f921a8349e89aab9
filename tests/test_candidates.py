"""--candidates: several random starts per image, the best one after a few steps goes on."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipguide import Session, Settings, generate
from clipguide.batch import resume_plan
from clipguide.engine import best_candidates, keep_latents, make_optimizer
from clipguide.errors import Interrupted
from clipguide.pipeline import candidate_seed
from clipguide.outputs.pictures import read_recipe
from clipguide.outputs.state import load_state

# whole-picture cutouts, no augments, no noise: the objective is deterministic, so a start's path
# does not depend on the other latents in its batch
EXACT = {"cut_min": 1.0, "augments": "none", "noise": 0.0, "lr": 0.2}


def pixels(path):
    return np.asarray(Image.open(path)).astype(int)


def test_best_candidates_picks_each_images_lowest_recent_loss_and_never_a_nan():
    history = [torch.tensor([5.0, 1.0, 3.0, 2.0, 2.0, 9.0]),  # 2 images x 3 candidates
               torch.tensor([1.0, 4.0, 3.0, float("nan"), 2.5, 0.1]),
               torch.tensor([1.0, 4.0, 3.0, float("nan"), 2.5, 0.2])]
    assert best_candidates(history, 3, window=2).tolist() == [0, 5]
    assert best_candidates(history, 3, window=3).tolist() == [0, 4]  # candidate 5 started badly (9)
    assert best_candidates(history[1:], 3, window=5).tolist() == [0, 5]
    assert best_candidates([torch.tensor([float("nan"), 7.0])], 2).tolist() == [1]


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_kept_latents_go_on_exactly_as_they_would_have_in_the_batch(name):
    target = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    z = torch.zeros(4, 2, 3, 3, requires_grad=True)
    opt = make_optimizer(name, [z], 0.1)

    def step(z, opt, rows):
        opt.zero_grad()
        ((z - target[rows]) ** 2).sum().backward()
        opt.step()

    for _ in range(3):
        step(z, opt, slice(None))
    kept, kept_opt = keep_latents(z, opt, torch.tensor([2, 0]))
    for _ in range(3):
        step(z, opt, slice(None))
        step(kept, kept_opt, [2, 0])
    assert torch.allclose(kept, z.detach()[[2, 0]])


def start_losses(args, seed, n):
    """The loss of each candidate's starting latent (what a one-step search compares)."""
    session = Session(Settings(prompt="a dog", **args), log=lambda m: None)
    seeds = [candidate_seed(seed, c) for c in range(n)]
    jobs = [session.plan.job("a dog", sd, Path("x.png")) for sd in seeds]
    z, _ = session.pipeline(jobs).initial_latents(seeds)
    with torch.no_grad():
        return session.objective(jobs)(z, 0)[0]


def test_the_start_with_the_lowest_loss_goes_on_as_if_it_had_been_the_only_one(tiny_args):
    args = tiny_args | EXACT | {"steps": 4}
    seed = next(s for s in range(20) if start_losses(args, s, 3).argmin() != 0)  # candidate 0 is not the best
    best = int(start_losses(args, seed, 3).argmin())
    searched = generate("a dog", seed=seed, output="searched.png", candidates=3, candidate_steps=1, **args)
    generate("a dog", seed=candidate_seed(seed, best), output="alone.png", **args)
    plain = generate("a dog", seed=seed, output="plain.png", **args)
    assert np.abs(pixels("searched.png") - pixels("alone.png")).max() <= 2
    assert np.abs(pixels("searched.png") - pixels("plain.png")).max() > 2
    assert searched.steps == 4
    recipe = read_recipe(searched.outputs[0])
    assert (recipe["candidates"], recipe["candidate_steps"], recipe["seed"]) == (3, 1, seed)
    assert read_recipe(plain.outputs[0])["candidates"] == 1


def test_frames_cover_the_search_steps_too(tiny_args):
    generate("a dog", seed=1, frames_dir="frames", save_every=2, candidates=2, candidate_steps=3,
             **(tiny_args | {"steps": 7}))
    assert sorted(p.name for p in Path("frames").iterdir()) == ["00000.png", "00002.png", "00004.png", "00006.png"]
    generate("a dog", seed=1, output="b.png", frames_dir="every10", candidates=2, candidate_steps=12, **(tiny_args | {"steps": 21}))
    assert sorted(p.name for p in Path("every10").iterdir()) == ["00000.png", "00010.png", "00020.png"]


def test_n_images_each_get_their_own_search(tiny_args):
    result = generate("a dog", seed=5, n_images=2, candidates=3, **(tiny_args | EXACT))
    assert [read_recipe(p)["seed"] for p in result.outputs] == [5, 6]
    assert len(result.loss) == 2 and not np.array_equal(pixels(result.outputs[0]), pixels(result.outputs[1]))


def test_interrupted_during_the_search_resumes_the_search_exactly(tiny_args):
    """Ctrl-C in the middle of the search of random starts: the state holds every start, its loss
    history and the search's frames, and --resume finishes the very picture and frames of a run that
    was never interrupted (the first version kept only the best start so far, and drew another)."""
    args = tiny_args | {"steps": 8, "candidates": 3, "candidate_steps": 5, "save_every": 2, "state_every": 0}
    whole = generate("a dog", seed=2, output="whole.png", frames_dir="whole", **args)
    session = Session(Settings(prompt="a dog", **args), log=lambda m: None)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 3  # after the third of the five search steps

    job = session.plan.job("a dog", 2, Path("part.png"), Path("part"))
    with pytest.raises(Interrupted):
        session.run([job], stop=stop, progress=False)
    state = load_state("part.state.pt")
    assert state["phase"] == "search" and state["step"] == 3 and state["z"].shape[0] == 3
    assert len(state["history"]) == 3 and [step for step, _ in state["shots"]] == [0, 2]
    assert read_recipe("part.png")["steps_done"] == 3
    assert not Path("part").exists() or not any(Path("part").iterdir())  # the search's frames wait for its end
    plan, jobs, st = resume_plan("part.state.pt", {})
    result = Session(plan, log=lambda m: None).run(jobs, resume=st, progress=False)
    assert result.steps == 8 and not Path("part.state.pt").exists()
    assert "steps_done" not in read_recipe("part.png")
    assert np.array_equal(pixels("part.png"), pixels(whole.outputs[0]))
    names = sorted(p.name for p in Path("whole").iterdir())
    assert names == sorted(p.name for p in Path("part").iterdir()) == ["00000.png", "00002.png", "00004.png",
                                                                        "00006.png"]
    for name in names:
        assert np.array_equal(pixels(Path("part") / name), pixels(Path("whole") / name))


def test_a_state_from_before_contrast_existed_resumes_without_it(tiny_args):
    from clipguide.outputs.state import save_state

    args = tiny_args | EXACT | {"steps": 6, "candidates": 1, "model": "tiny"}  # the tiny preset has a contrast rule
    session = Session(Settings(prompt="a red circle", **args), log=lambda m: None)
    assert session.settings.contrast
    with pytest.raises(Interrupted):
        session.run([session.plan.job("a red circle", 2, Path("old.png"))], stop=lambda: True, progress=False)
    state = load_state("old.state.pt")
    del state["settings"]["contrast"]  # as an earlier version wrote it
    save_state("old.state.pt", state)
    plan, jobs, _ = resume_plan("old.state.pt", {})
    assert plan.settings.contrast == "" and [p.text for p in jobs[0].stages[0]] == ["a red circle"]


def test_each_prompt_is_encoded_and_warned_about_once_however_many_starts(tiny_args):
    logs = []
    session = Session(Settings(prompt="a dog", **tiny_args), log=logs.append)
    long = " ".join(["dog"] * (session.clips[0].context_length + 5))
    calls = []
    real = session.clips[0].encode_text
    session.clips[0].encode_text = lambda texts: calls.append(list(texts)) or real(texts)
    job = session.plan.job(long, 0, Path("x.png"))
    objective = session.objective([job], n=3)
    assert calls == [[long]] and sum("tokens; CLIP reads the first" in m for m in logs) == 1
    targets = objective.members[0].targets
    assert targets.shape[0] == 3 and torch.equal(targets[0], targets[2])


def test_the_tiny_presets_search_steps_aside_for_runs_with_one_start(tmp_path):
    """The tiny preset searches 3 random starts; an init image (or motion) has one start, so asking for
    one must not fail on a search the user never asked for, and an explicit --candidates still does."""
    from clipguide.errors import UserError
    from clipguide.settings import resolve as with_defaults

    plain = with_defaults(Settings(prompt="a red circle", model="tiny"))
    assert (plain.candidates, plain.candidate_steps) == (3, 90)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "init.png")
    init = with_defaults(Settings(prompt="a red circle", model="tiny", init_image=str(tmp_path / "init.png")))
    assert init.candidates == 1
    moving = with_defaults(Settings(prompt="a red circle", model="tiny", zoom=1.05, save_every=5))
    assert moving.candidates == 1
    with pytest.raises(UserError, match="several random starts"):
        with_defaults(Settings(prompt="a red circle", model="tiny", candidates=3, zoom=1.05, save_every=5))
