import math

import pytest

from clipguide.errors import UserError
from clipguide.prompts import (Contrast, Prompt, PromptSchedule, contrast_prompts, parse_contrast, parse_negative,
                               parse_prompt, parse_stage, parse_story, read_batch, schedule, slug)


def test_weight_and_stop_are_parsed():
    assert parse_prompt("a dog") == Prompt("a dog", 1.0, -math.inf)
    assert parse_prompt("a dog:1.5") == Prompt("a dog", 1.5, -math.inf)
    assert parse_prompt("blurry:-0.5:0.2") == Prompt("blurry", -0.5, 0.2)


def test_pipes_make_several_prompts_and_carets_make_stages():
    stages = parse_story("a dog:2 | a cat:-1 ^ a tree")
    assert [[p.text for p in s] for s in stages] == [["a dog", "a cat"], ["a tree"]]
    assert [p.weight for p in stages[0]] == [2.0, -1.0]


def test_escaped_separators_stay_in_the_text():
    assert parse_prompt(r"ratio 16\:9") == Prompt("ratio 16:9")
    assert [p.text for p in parse_stage(r"this \| that")] == ["this | that"]
    assert [p.text for s in parse_story(r"up \^ down") for p in s] == ["up ^ down"]


def test_negative_prompts_push_away_with_their_strength():
    assert parse_negative("a blob:0.3 | blurry") == [Prompt("a blob", -0.3), Prompt("blurry", -1.0)]
    assert parse_negative(r"16\:9 frame") == [Prompt("16:9 frame", -1.0)]
    assert parse_negative(None) == parse_negative("") == parse_negative(" none ") == []


@pytest.mark.parametrize("spec,words", [("a blob:-0.3", "strength must be a number >= 0"), ("a ^ b", "cannot be a story"),
                                        ("a blob:lots", "is not a number"), ("a | ", "empty prompt")])
def test_bad_negative_prompts_say_why(spec, words):
    with pytest.raises(UserError, match=words):
        parse_negative(spec)


def test_contrast_pushes_each_pulling_prompt_from_itself_with_words_swapped():
    rules = parse_contrast("circle, square,triangle=blob:0.3")
    assert rules == [Contrast(("circle", "square", "triangle"), "blob", 0.3)]
    stage = parse_stage("a red Circle on blue:2 | squares | a triangle:-1 | a dog")
    # whole words in any case; weight -strength * weight; pushing prompts and non-matching ones add nothing
    assert contrast_prompts(stage, rules) == [Prompt("a red blob on blue", -0.6)]
    two = parse_contrast("circle=blob | red=grey:1")
    assert contrast_prompts(parse_stage("a red circle"), two) == [Prompt("a red blob", -1.0), Prompt("a grey circle", -1.0)]
    assert contrast_prompts(parse_stage("a circle"), parse_contrast("circle=a\\1:0.5")) == [Prompt("a a\\1", -0.5)]
    assert parse_contrast("dog=cat") == [Contrast(("dog",), "cat", 1.0)]
    assert parse_contrast(None) == parse_contrast(" None ") == []


@pytest.mark.parametrize("spec,words", [("circle", "is not WORDS=REPLACEMENT"), ("=blob", "is not WORDS=REPLACEMENT"),
                                        ("circle=", "is not WORDS=REPLACEMENT"), ("a=b:x", "'x' is not a number"),
                                        ("a=b:-1", "must be a number >= 0")])
def test_bad_contrast_rules_say_why(spec, words):
    with pytest.raises(UserError, match=words) as e:
        parse_contrast(spec)
    assert e.value.fix


def test_prompt_round_trips_through_str():
    for spec in ["a dog", "a dog:1.5", "blurry:-0.5:0.2", r"16\:9 frame"]:
        assert parse_prompt(str(parse_prompt(spec))) == parse_prompt(spec)


@pytest.mark.parametrize("spec,words", [
    ("", "empty prompt"), ("   ", "empty prompt"), ("dog:abc", "'abc' is not a number"),
    ("dog:1:x", "stop 'x' is not a number"), ("a:0 | b:0", "all prompt weights are zero"),
    ("dog:nan", "weight must be a number >= -1e+06 and <= 1e+06"),
    ("a red circle:1e39", "weight must be a number >= -1e+06 and <= 1e+06 (got 1e+39)"),
    ("dog:1:-inf", "stop must be a number"), (":2", "empty prompt"), ("a ^ ", "empty prompt"),
])
def test_bad_prompts_are_user_errors_naming_the_problem(spec, words):
    with pytest.raises(UserError) as e:
        parse_story(spec)
    assert words in str(e.value)
    assert e.value.fix


def test_schedule_switches_stages_and_blends():
    sched = PromptSchedule(parse_story("a ^ b:2"), change_every=10, blend_steps=4)
    assert sched.weights_at(0) == [1.0, 0.0]
    assert sched.weights_at(9) == [1.0, 0.0]
    assert sched.weights_at(10) == [0.75, 0.5]  # a quarter of the way to stage 2
    assert sched.weights_at(13) == [0.0, 2.0]
    assert sched.weights_at(500) == [0.0, 2.0]  # stays on the last stage


def test_schedule_without_blend_jumps():
    sched = PromptSchedule(parse_story("a ^ b ^ c"), change_every=5)
    assert [sched.stage_at(i) for i in (0, 4, 5, 9, 10, 99)] == [0, 0, 1, 1, 2, 2]
    assert sched.weights_at(5) == [0.0, 1.0, 0.0]


def test_batch_file_skips_comments_blanks_and_reports_bad_lines(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# heading\n\na dog\n  a cat:2  \nbad:abc\n# end\n")
    lines = read_batch(f)
    assert [(l.number, l.text, l.error is None) for l in lines] == [(3, "a dog", True), (4, "a cat:2", True),
                                                                    (5, "bad:abc", False)]


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_empty_batch_file_is_a_user_error(tmp_path, content):
    f = tmp_path / "p.txt"
    f.write_text(content)
    with pytest.raises(UserError, match="no prompts"):
        read_batch(f)


def test_missing_batch_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_batch(tmp_path / "nope.txt")


def test_slug_is_file_name_safe():
    assert slug("A Painting of a Dog!!") == "a-painting-of-a-dog"
    assert slug("???") == "image"
    assert len(slug("x" * 200)) == 60


def test_a_schedule_of_no_stages_is_refused_not_divided_by_zero():
    with pytest.raises(ValueError, match="at least one stage"):
        schedule([], 100, None, 0)


def test_one_grammar_splits_text_and_numbers_for_every_value():
    """values.py: extra unescaped colons belong to the text, escaped ones are literal; each number is
    checked against the range its option declares."""
    from clipguide.guide.palette import parse_palette
    from clipguide.plan import noise_prompt, parse_batch_size
    from clipguide.values import split, turned_off

    assert split("a:b:1:2", 2) == ("a:b", ["1", "2"]) and split("a", 2) == ("a", [])
    assert parse_prompt("a:b:1:2") == Prompt("a:b", 1.0, 2.0)
    assert parse_prompt(r"16\:9:2") == Prompt("16:9", 2.0)
    assert turned_off(None) and turned_off(" NONE ") and turned_off("") and not turned_off("red")
    assert noise_prompt("42:0.5") == (42, 0.5) and parse_batch_size("auto") == 0 and parse_batch_size("3") == 3
    for bad, words in [(lambda: noise_prompt("4294967296"), "seed must be a whole number >= 0 and <= 4294967295"),
                       (lambda: noise_prompt("1:1e39"), "weight must be a number >= -1e+06"),
                       (lambda: parse_palette("red:2e6"), "weight must be a number >= 0 and <= 1e+06"),
                       (lambda: parse_contrast("a=b:1e7"), "strength must be a number >= 0 and <= 1e+06"),
                       (lambda: parse_batch_size("257"), "must be a whole number >= 1 and <= 256")]:
        with pytest.raises(UserError) as e:
            bad()
        assert words in e.value.problem
