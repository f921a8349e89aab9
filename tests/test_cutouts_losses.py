import math

import pytest
import torch

from clipguide.guide.augments import DEFAULT_AUGMENTS, parse_augments
from clipguide.guide.cutouts import Cutouts
from clipguide.errors import UserError
from clipguide.guide.losses import prompt_loss, spherical_distance, tv_loss


def test_cutouts_have_clip_size_and_image_major_order():
    torch.manual_seed(0)
    cut = Cutouts(16, cutn=5, augments=(), noise=0)
    image = torch.stack([torch.zeros(3, 40, 48), torch.ones(3, 40, 48)])
    cuts = cut(image)
    assert cuts.shape == (10, 3, 16, 16)
    assert cuts[:5].max() == 0 and cuts[5:].min() == 1  # the first 5 come from image 0


def test_cutouts_without_noise_stay_in_range_and_with_noise_do_not():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    clean = Cutouts(16, 8, augments=DEFAULT_AUGMENTS, noise=0)(image)
    assert clean.min() >= 0 and clean.max() <= 1
    noisy = Cutouts(16, 8, augments=(), noise=0.5)(image)
    assert noisy.min() < 0 or noisy.max() > 1


def test_shift_moves_cutouts_without_turning_them_and_affine_turns_some():
    torch.manual_seed(0)
    rows = torch.linspace(0, 1, 32)[None, None, :, None].expand(1, 3, 32, 32)  # each row one value
    across = lambda cuts: cuts.std(dim=-1).amax(dim=(1, 2))  # noqa: E731  per cutout: spread along rows
    shifted = Cutouts(16, 32, augments=("shift",), noise=0)(rows)
    assert across(shifted).max() < 1e-4
    whole = Cutouts(16, 32, augments=("shift",), noise=0, cut_min=1.0)(rows)  # same crop; only the shift varies
    assert (whole - whole[:1]).abs().amax(dim=(1, 2, 3)).gt(0.02).sum() >= 8
    turned = Cutouts(16, 32, augments=("affine",), noise=0)(rows)
    assert (across(turned) > 0.02).sum() >= 8


def test_whole_image_cutout_is_an_area_average():
    image = torch.rand(1, 3, 32, 32)
    cuts = Cutouts(16, 3, augments=(), noise=0, cut_min=1.0)(image)
    expected = torch.nn.functional.avg_pool2d(image, 2)
    assert torch.allclose(cuts, expected.expand(3, -1, -1, -1), atol=1e-5)


def test_cut_pow_favours_small_cutouts():
    torch.manual_seed(0)
    big = Cutouts(8, 2000, cut_pow=0.3).boxes(1, 64, 64, "cpu")
    small = Cutouts(8, 2000, cut_pow=3.0).boxes(1, 64, 64, "cpu")
    side = lambda b: (b[:, 3] - b[:, 1]).mean()
    assert side(small) < side(big)
    assert small[:, 1:].min() >= 0 and small[:, 3:].max() <= 64


def test_cutouts_pass_gradients_to_the_image():
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    Cutouts(16, 4)(image).sum().backward()
    assert image.grad.abs().sum() > 0


def test_augment_names():
    assert parse_augments("affine, jitter") == ("affine", "jitter")
    assert parse_augments("none") == ()
    assert parse_augments(None) == DEFAULT_AUGMENTS
    with pytest.raises(UserError, match="unknown augment 'blur'"):
        parse_augments("affine,blur")


def test_spherical_distance_is_zero_for_same_direction_and_grows_with_angle():
    x = torch.tensor([1.0, 0.0])
    assert spherical_distance(x, 3 * x).item() == pytest.approx(0, abs=1e-6)
    right = spherical_distance(x, torch.tensor([0.0, 1.0])).item()
    opposite = spherical_distance(x, torch.tensor([-1.0, 0.0])).item()
    assert right == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)
    assert opposite == pytest.approx(2 * (math.pi / 2) ** 2, rel=1e-5)


def _grad_toward(weight, stop=-math.inf):
    emb = torch.tensor([[[1.0, 0.2]]], requires_grad=True)
    target = torch.tensor([[[1.0, 1.0]]])
    loss = prompt_loss(emb, target, torch.tensor([[weight]]), torch.tensor([[stop]]))
    loss.sum().backward()
    return loss.item(), emb.grad[0, 0, 1].item()


def test_positive_weight_pulls_negative_weight_pushes():
    loss_pos, g_pos = _grad_toward(1.0)
    loss_neg, g_neg = _grad_toward(-1.0)
    assert g_pos < 0 < g_neg  # descent raises y toward the target for +, lowers it for -
    assert loss_pos == pytest.approx(-loss_neg)


def test_stop_cuts_the_gradient_once_close_enough():
    loss, grad = _grad_toward(1.0, stop=10.0)  # distance is far below the stop
    assert grad == 0 and loss > 0
    _, grad = _grad_toward(1.0, stop=0.0)
    assert grad != 0


def test_zero_weight_prompts_do_nothing():
    emb = torch.randn(2, 3, 4)
    targets = torch.randn(2, 2, 4)
    a = prompt_loss(emb, targets, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.full((2, 2), -math.inf))
    b = prompt_loss(emb, targets[:, :1], torch.tensor([[1.0], [1.0]]), torch.full((2, 1), -math.inf))
    assert torch.allclose(a, b)


def test_total_variation_is_zero_when_flat_and_counts_edges():
    flat = torch.full((1, 3, 16, 16), 0.4)
    one_square = flat.clone()
    one_square[..., 4:12, 4:12] = 0.9
    checker = flat.clone()
    checker[..., ::2, ::2] = 0.9
    tv = lambda x, w=1.0: tv_loss(x, w).item()  # noqa: E731
    assert tv(flat) == 0
    assert 0 < tv(one_square) < tv(checker)  # one region's edge is short; a texture's is long
    assert tv(one_square, 3.0) == pytest.approx(3 * tv(one_square))
    assert tv_loss(torch.cat([flat, checker]), 1.0).shape == (2,)


def test_palette_prompt_gives_each_image_the_colours_its_pulling_prompts_name():
    """`--palette prompt`: an image asked for a red circle on blue is pulled toward red and blue, one
    asked for a green square on white toward green and white (a negative prompt's colour does not
    count), and an image whose prompt names no colour, or one only, is not pulled at all."""
    from clipguide.guide.objective import image_losses
    from clipguide.guide.palette import NAMED, parse_palette
    from clipguide.prompts import parse_negative, parse_stage, schedule

    def sched(text, negative=None):
        return schedule([parse_stage(text) + parse_negative(negative)], 10, None, 0)

    palette = parse_palette("prompt:2")
    [term] = image_losses(GUIDE, palette, [sched("a red circle on a blue background"),
                                           sched("a green square on a white background", "a yellow blob"),
                                           sched("a dog")], "cpu")

    def flat(rgb):
        return torch.tensor(rgb).view(3, 1, 1).expand(3, 8, 8)

    red, blue, green, yellow = (NAMED[c] for c in ("red", "blue", "green", "yellow"))
    on_palette = term(torch.stack([flat(blue), flat(green), flat(yellow)]), 0)
    assert on_palette[0] == 0 and on_palette[1] == 0 and on_palette[2] == 0
    off = term(torch.stack([flat(green), flat(yellow), flat(red)]), 0)
    assert off[0] > 0.1 and off[1] > 0.1 and off[2] == 0  # the dog's picture is not pulled
    assert off[0] == pytest.approx(2 * min(sum((a - b) ** 2 for a, b in zip(green, c)) for c in (red, blue)))


def test_a_palette_that_names_no_colour_adds_no_term_and_given_colours_stay():
    from clipguide.guide.objective import image_losses
    from clipguide.guide.palette import parse_palette
    from clipguide.prompts import parse_stage, schedule

    dog = [schedule([parse_stage("a dog")], 10, None, 0)]
    assert image_losses(GUIDE, parse_palette("prompt"), dog, "cpu") == []
    assert parse_palette("white,prompt:0.5").for_texts(["a red dog", "a white cat"]) == (
        (0.97, 0.97, 0.97), (0.90, 0.10, 0.10))
    assert image_losses(GUIDE, parse_palette("white,prompt:0.5"), dog, "cpu") == []  # white alone: no pull
    assert image_losses(GUIDE, parse_palette("prompt"), [schedule([parse_stage("a red circle")], 10, None, 0)],
                        "cpu") == []  # red alone would paint the whole picture red
    assert len(image_losses(GUIDE, parse_palette("white:0.5"), dog, "cpu")) == 1  # a colour given is kept


def test_a_palette_with_two_weights_grows_from_the_first_to_the_second_over_the_run():
    """'red:0:10' pulls nothing at the first step, a little at mid-run (the square of the progress)
    and with weight 10 by the end; one weight stays the same."""
    from clipguide.guide.objective import image_losses
    from clipguide.guide.palette import parse_palette
    from clipguide.prompts import parse_stage, schedule

    blue = torch.tensor([0.1, 0.25, 0.9]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    dog = [schedule([parse_stage("a dog")], 100, None, 0)]
    [ramp] = image_losses(GUIDE, parse_palette("red:0:10"), dog, "cpu")
    [steady] = image_losses(GUIDE, parse_palette("red:10"), dog, "cpu")
    full = steady(blue, 0).item()
    assert full > 1 and steady(blue, 99).item() == full
    assert ramp(blue, 0).item() == 0
    assert ramp(blue, 50).item() == pytest.approx(full / 4)
    assert ramp(blue, 100).item() == pytest.approx(full)
    with pytest.raises(UserError):
        parse_palette("red:1:2:3")


GUIDE = type("Guide", (), {"tv_weight": 0.0, "saturation_weight": 0.0, "symmetry_weight": 0.0, "steps": 100})()
