"""The tiny world generator: seeded, labelled correctly, captions that say what is drawn."""

import math

import pytest
import torch

from clipguide.tiny import world


def test_same_seed_same_batch_and_other_seed_differs():
    a, b, c = world.make_batch(16, 3), world.make_batch(16, 3), world.make_batch(16, 4)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert torch.equal(a.shape, b.shape) and torch.equal(a.colour, b.colour)
    assert not torch.equal(a.images, c.images)


def test_generator_argument_advances_and_reproduces():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first, second = world.make_batch(4, g1), world.make_batch(4, g1)
    assert not torch.equal(first.images, second.images)
    assert torch.equal(world.make_batch(4, g2).images, first.images)


def test_images_shape_range_and_exactly_two_colours():
    b = world.make_batch(32, 0)
    assert b.images.shape == (32, 3, 64, 64) and b.images.dtype == torch.float32
    assert b.images.min() >= 0 and b.images.max() <= 1
    palette = torch.tensor(list(world.COLOURS.values()))
    for i in range(32):
        pixels = b.images[i].reshape(3, -1).T.unique(dim=0)
        assert len(pixels) == 2
        assert all((palette == p).all(1).any() for p in pixels)


def test_shape_colour_never_equals_background():
    b = world.make_batch(2000, 1)
    assert (b.colour != b.background).all()
    # every colour appears both as shape and as background, every shape appears
    assert set(b.colour.tolist()) == set(range(6)) == set(b.background.tolist())
    assert set(b.shape.tolist()) == {0, 1, 2}


def test_mask_marks_exactly_the_shape_colour_pixels():
    b = world.make_batch(24, 2)
    for i in range(24):
        m = world.shape_mask(int(b.shape[i]), b.cx[i], b.cy[i], b.radius[i])
        assert m.shape == (64, 64) and m.dtype == torch.bool
        fg = torch.tensor(world.COLOURS[world.COLOUR_NAMES[b.colour[i]]])
        bg = torch.tensor(world.COLOURS[world.COLOUR_NAMES[b.background[i]]])
        img = b.images[i]
        assert torch.allclose(img[:, m], fg[:, None].expand(3, int(m.sum())))
        assert torch.allclose(img[:, ~m], bg[:, None].expand(3, int((~m).sum())))


@pytest.mark.parametrize("shape", world.SHAPES)
def test_mask_area_and_extent(shape):
    r = 15.0
    m = world.shape_mask(shape, 32, 32, r)
    assert abs(int(m.sum()) - world.area(shape, r)) / world.area(shape, r) < 0.08
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert xs.min() >= 32 - r - 1 and xs.max() <= 32 + r and ys.min() >= 32 - r - 1 and ys.max() <= 32 + r
    if shape == "triangle":  # apex at the top: the top row is narrower than the bottom row
        assert m[ys.min()].sum() < m[ys.max()].sum()
    if shape == "circle":  # corners of the bounding box are outside a circle
        assert not m[int(32 - r + 1), int(32 - r + 1)]


def test_shapes_inside_picture():
    b = world.make_batch(500, 5)
    assert ((b.cx - b.radius) >= 0).all() and ((b.cx + b.radius) <= 64).all()
    assert ((b.cy - b.radius) >= 0).all() and ((b.cy + b.radius) <= 64).all()
    assert b.radius.min() >= 7 and b.radius.max() <= 22


def test_captions_mention_the_labels():
    b = world.make_batch(400, 6)
    words_seen = set()
    for i, cap in enumerate(b.captions):
        fmt, has_shape, has_colour, has_bg = world.TEMPLATES[int(b.template[i])]
        shape, colour, bg = world.SHAPES[b.shape[i]], world.COLOUR_NAMES[b.colour[i]], world.COLOUR_NAMES[b.background[i]]
        words = cap.split()
        assert (shape in words) == has_shape
        if has_colour:
            assert words.index(colour) < (words.index("on") if "on" in words else len(words))
        if has_bg:
            assert bg in words[words.index("on"):] if "on" in words else cap == f"{bg} background"
        words_seen.update(words)
        # no other shape or colour word sneaks in
        others = (set(world.SHAPES) | set(world.COLOURS)) - {shape, colour, bg}
        assert not others & set(words)
    assert {"a red circle on a blue background".split()[1]} <= words_seen
    assert len(set(b.captions)) > 100  # many distinct captions, partial ones included
    assert {"red", "a circle", "blue background"} & set(b.captions)


def test_example_captions_and_full_caption_share():
    assert world.caption(0, 0, 2, 0) == "a red circle on a blue background"
    assert world.caption(0, 0, 2, world.TEMPLATES.index(("{c}", False, True, False))) == "red"
    b = world.make_batch(4000, 8)
    share_full = float((b.template < world.N_FULL).float().mean())
    assert math.isclose(share_full, world.FULL_TEMPLATE_P, abs_tol=0.04)


def test_caption_matches_is_truth_of_partial_captions():
    b = world.make_batch(64, 9)
    ok = world.caption_matches(b.template, b.shape, b.colour, b.background, b.shape, b.colour, b.background)
    assert ok.diagonal().all()  # every caption is true of its own picture
    # "a circle" matches exactly the circles; a full caption matches only pictures with all three labels
    t = torch.tensor([world.TEMPLATES.index(("a {s}", True, False, False)), 0])
    z = torch.tensor([0, 0])
    m = world.caption_matches(t, z, torch.tensor([0, 0]), torch.tensor([2, 2]), b.shape, b.colour, b.background)
    assert torch.equal(m[0], b.shape == 0)
    assert torch.equal(m[1], (b.shape == 0) & (b.colour == 0) & (b.background == 2))


def test_all_full_captions_cover_every_combination():
    caps, rows = world.all_full_captions()
    assert len(caps) == len(set(caps)) == 3 * 6 * 5
    assert (rows[:, 1] != rows[:, 2]).all()


def test_all_captions_hold_every_caption_training_draws():
    """The saved CLIP keeps only the token rows of these captions, so none drawn may be missing."""
    every = set(world.all_captions())
    drawn = world.concat(world.make_batch(400, 1), world.make_blobs(200, 2)).captions
    assert set(drawn) <= every and len(set(drawn)) > 150
    assert set(world.all_full_captions()[0]) <= every and "red" in every and "a blob on blue" in every


def test_blobs_are_seeded_two_coloured_and_captioned_without_a_shape_word():
    a, b = world.make_blobs(24, 5), world.make_blobs(24, 5)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (24, 3, 64, 64) and (a.shape == world.BLOB).all()
    assert (a.colour != a.background).all()
    for i in range(24):
        assert len(a.images[i].reshape(3, -1).T.unique(dim=0)) == 2
        assert not any(s in a.captions[i] for s in world.SHAPES)
        c, bg = world.COLOUR_NAMES[a.colour[i]], world.COLOUR_NAMES[a.background[i]]
        flags = world.TEMPLATES[a.template[i]]
        assert (c in a.captions[i]) == flags[2] and (bg in a.captions[i]) == flags[3]
        # the centroid kept for crops lies within the picture
        assert 0 < a.cx[i] < 64 and 0 < a.cy[i] < 64


@pytest.mark.parametrize("kind", world.BLOB_KINDS)
def test_each_blob_kind_is_a_nonempty_region(kind):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        m = world.blob_mask(kind, g)
        assert m.shape == (64, 64) and m.dtype == torch.bool and 0 < m.sum() < 64 * 64


def test_oversized_blobs_overflow_the_frame_but_leave_some_background():
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        m = world.blob_mask("oversized", g)
        assert 0.5 <= m.float().mean() <= 0.92
        assert m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()  # it touches the frame


def test_shape_captions_are_false_of_blobs_and_shapeless_ones_true():
    w, b = world.make_batch(8, 1), world.make_blobs(8, 2)
    both = world.concat(w, b)
    assert len(both.captions) == 16 and torch.equal(both.images[8:], b.images)
    ok = world.caption_matches(both.template, both.shape, both.colour, both.background,
                               both.shape, both.colour, both.background)
    assert ok.diagonal().all()  # every caption is true of its own picture
    shape_caps = torch.tensor([t[1] for t in world.TEMPLATES])[w.template]
    assert not ok[:8, 8:][shape_caps].any()  # "a red circle ..." is never true of a blob
    assert not ok[8:, :8][torch.tensor([t[1] for t in world.TEMPLATES])[b.template]].any()  # nor "a blob" of a circle
    assert world.caption(world.BLOB, 0, 2) == "a red blob on a blue background"
