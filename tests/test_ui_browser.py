"""The web UI in a real browser: `clipguide-ui --model tiny` on a free port, driven by headless Chromium
(Debian's `chromium`, through Playwright; `.ci/run` installs it).

One server and one browser for the module; the tests run in order and share the output folder:
draw and watch the preview, find the picture in the gallery with its recipe, stop a run (its state
is saved), see it from a second tab (which may watch, not stop), resume it, and check the server
listens on 127.0.0.1 only.  Then what a visitor may get: a prompt's HTML and Markdown are shown as
text and fetch nothing, the file route hands out the gallery's pictures and nothing else.  Then the
controls: Ctrl+Enter runs, the gallery downloads the exact PNG and video, a queued run is cancelled, a
second click on a fixed seed is refused before it is queued, the gallery's buttons fill the form.  Last,
Ctrl-C leaves no temporary file, and a second server with `--auth` answers nothing before a login.
`CLIPGUIDE_UI_SCREENSHOT=docs/ui.png python -m pytest -m browser` also writes docs/ui.png, the screenshot
of docs/ui.md, once the page's text was checked for paths of this machine."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import loopback
from clipguide.options import OPTIONS
from clipguide.outputs.pictures import read_recipe

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "a red circle on a blue background"


def chromium() -> str:
    found = os.environ.get("CLIPGUIDE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser tests need Chromium: apt-get install chromium (or set CLIPGUIDE_CHROMIUM); "
                    "deselect them with -m 'not browser'")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """`clipguide-ui --model tiny ARGS` with its temporary files under root/tmp (TMPDIR), Gradio's
    shared temporary folder (root/tmp/gradio) not named to it; returns once it says where it listens."""
    (root / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, CLIPGUIDE_CACHE=str(root / "cache"), TMPDIR=str(root / "tmp"), PYTHONUNBUFFERED="1")
    env.pop("GRADIO_TEMP_DIR", None)
    log = root / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "clipguide.ui", "--model", "tiny", *args], cwd=root, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "open http" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "open http" in log.read_text(), log.read_text()
    return proc, log


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    out, port = root / "out", free_port()
    proc, log = start_server(root, ["--port", str(port), "--output-dir", str(out)])
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "out": out, "proc": proc, "log": log,
           "tmp": root / "tmp", "root": root}
    stop_server(proc)


@pytest.fixture(scope="module")
def chromium_browser():
    with sync_playwright() as pw:
        found = pw.chromium.launch(headless=True, executable_path=chromium(), args=CHROMIUM_ARGS)
        yield found
        found.close()


@pytest.fixture(scope="module")
def browser(chromium_browser):
    """One browser profile: its pages are the tabs of one user."""
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1300})
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(server, browser):
    p = browser.new_page()
    p.set_default_timeout(60_000)
    p.goto(server["url"])
    p.wait_for_selector("#run")
    return p


def shown(page, elem_id: str) -> str:
    """The text an element shows: a text box's value, else the element's text."""
    found = page.locator(f"#{elem_id}")
    if not found.count():
        return ""
    box = found.locator("textarea, input")
    return box.first.input_value() if box.count() else found.inner_text()


def status(page) -> str:
    return shown(page, "status")


def wait_shown(page, elem_id: str, pattern: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = shown(page, elem_id)
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"#{elem_id} never matched {pattern!r}; it says {shown(page, elem_id)!r}")


def wait_status(page, pattern: str, timeout: float = 120) -> str:
    return wait_shown(page, "status", pattern, timeout)


def fill(page, name: str, value: str) -> None:
    page.locator(f"#field-{name}").locator("textarea, input").first.fill(value)


def step_of(text: str) -> int:
    found = re.search(r"step (\d+)/", text)
    return int(found.group(1)) if found else -1


def test_a_run_shows_its_preview_changing_and_lands_in_the_gallery_with_its_recipe(server, page):
    fill(page, "prompt", PROMPT)
    fill(page, "steps", "40")
    fill(page, "candidates", "1")
    fill(page, "seed", "3")
    page.locator("#run").click()
    shown, text, deadline = [], "", time.monotonic() + 120
    while "done" not in text and time.monotonic() < deadline:
        text = status(page)
        assert not re.search(r"bad input|failed", text), text
        img = page.locator("#preview img")
        src = img.first.get_attribute("src") if "running" in text and img.count() else None
        if src and src not in shown:
            shown.append(src)
        time.sleep(0.1)
    assert "done #1" in text
    assert len(shown) >= 3, f"the preview changed {len(shown) - 1} times while it ran"
    picture = server["out"] / f"{PROMPT.replace(' ', '-')}-3.png"
    recipe = read_recipe(picture)
    assert (recipe["prompt"], recipe["seed"], recipe["steps"], recipe["candidates"]) == (PROMPT, 3, 40, 1)
    page.locator("#gallery img").first.click()
    recipe_box = page.locator("#recipe textarea")
    recipe_box.wait_for()
    deadline = time.monotonic() + 30
    while '"seed": 3' not in recipe_box.input_value() and time.monotonic() < deadline:
        time.sleep(0.1)
    shown_recipe = json.loads(recipe_box.input_value())
    assert (shown_recipe["prompt"], shown_recipe["seed"], shown_recipe["steps"]) == (PROMPT, 3, 40)


def test_stop_saves_the_state_a_second_tab_watches_but_cannot_stop_and_resume_goes_on(server, page, browser):
    fill(page, "steps", "2000")
    fill(page, "seed", "4")
    page.locator("#run").click()
    text = wait_status(page, r"running #2 .*step (\d\d|[5-9])/2000")
    other = browser.new_page()  # a second tab re-attaches to the job the server runs: it watches
    other.goto(server["url"])
    wait_status(other, r"running #2 .*step \d+/2000", timeout=60)
    other.locator("#stop").click()  # ... but the run is not its own
    wait_shown(other, "message", r"#2 was started in another tab -- only that tab can stop it")
    time.sleep(1.5)
    assert re.search(r"running #2 ", status(page)), status(page)
    page.locator("#stop").click()
    text = wait_status(page, r"stopped #2")
    state = server["out"] / f"{PROMPT.replace(' ', '-')}-4.state.pt"
    assert state.is_file(), text
    stopped_at = read_recipe(state.with_name(state.name.replace(".state.pt", ".png")))["steps_done"]
    assert 0 < stopped_at < 2000
    other.locator("#resume").click()
    wait_shown(other, "message", r"#2 was started in another tab -- only that tab can resume it")
    other.close()
    time.sleep(1.5)
    assert re.search(r"stopped #2 ", status(page)), status(page)
    page.locator("#resume").click()
    text = wait_status(page, r"running #3 .*step \d+/2000")
    assert step_of(text) > stopped_at
    page.reload()  # a reloaded tab is still the tab that started the run
    page.wait_for_selector("#run")
    wait_status(page, r"running #3 ")
    page.locator("#stop").click()
    wait_status(page, r"stopped #3")
    assert state.is_file()
    assert read_recipe(state.with_name(state.name.replace(".state.pt", ".png")))["steps_done"] > stopped_at


def listening(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_the_server_listens_on_127_0_0_1_only(server):
    assert listening(server["port"]) == ["0100007F"]  # 127.0.0.1, little-endian hex; no other address
    assert "not only on this machine" not in server["log"].read_text()


def get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes, list[str]]:
    """Status, body and cookies set of an HTTP request (an error status is an answer, not an exception)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read(), r.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get_all("Set-Cookie") or []


def file_url(base: str, path: Path) -> str:
    return f"{base}gradio_api/file={urllib.parse.quote(str(path))}"


def test_html_and_markdown_in_a_prompt_are_shown_as_text_in_every_tab_and_fetch_nothing(server, page,
                                                                                      chromium_browser):
    served = loopback.Served()
    http, _ = loopback.start("cdn", served)  # counts every request made to it
    port = http.server_port
    other = chromium_browser.new_context()  # another visitor, who only watches
    try:
        bad = f"red <img src=http://127.0.0.1:{port}/b.png> ![x](http://127.0.0.1:{port}/c.png)"
        fill(page, "prompt", bad)  # refused: its colons read as weights; the error quotes it
        fill(page, "steps", "10")
        fill(page, "seed", "7")
        page.locator("#run").click()
        wait_shown(page, "message", r"weight .* is not a number")
        assert shown(page, "message").endswith("or escape a colon as \\:")  # the backslash stays
        good = (f"blue <img src=//127.0.0.1&#58;{port}/d.png> ![x](//127.0.0.1\\:{port}/e.png) "
                f"<a href=//127.0.0.1&#58;{port}/f>link</a> \\:")
        fill(page, "prompt", good)
        page.locator("#run").click()
        task = re.search(r"submitted #(\d+)", wait_shown(page, "message", r"submitted #\d+")).group(1)
        watcher = other.new_page()
        watcher.goto(server["url"])
        for tab in (page, watcher):
            wait_status(tab, rf"#{task} ")
        time.sleep(3)  # a few more looks at the queue in both tabs
        assert served.hits == []
        assert f"submitted #{task}: {good}" in shown(page, "message")  # as typed, backslashes too
        for tab in (page, watcher):
            assert f"#{task} blue <img src=//127.0.0.1&#58;{port}/d.png>" in status(tab)
            assert tab.locator("#status img, #message img, #queue img, #status a, #message a").count() == 0
        wait_status(page, rf"done #{task} ")
        fill(page, "prompt", bad)
        page.locator("#run").click()
        wait_shown(page, "message", re.escape(f"prompt '{bad}': weight"))
        time.sleep(1)
        assert served.hits == []
    finally:
        other.close()
        http.shutdown()


def test_the_file_route_hands_out_the_gallerys_pictures_and_nothing_else(server, page):
    out, base = server["out"], server["url"]
    page.reload()
    page.wait_for_selector("#gallery img")
    sources = [img.get_attribute("src") for img in page.locator("#gallery img").all()]
    pictures = {p.name: p.read_bytes() for p in out.glob("*.png") if not p.name.startswith(".")}
    assert len(sources) == len(pictures) >= 2
    for src in sources:  # what the gallery shows, byte for byte
        code, body, _ = get(urllib.parse.urljoin(base, src))
        assert code == 200 and body == pictures[urllib.parse.unquote(src).rsplit("/", 1)[1]]
    picture = next(iter(sorted(out.glob("*.png"))))
    secret = b"not for the network"
    planted = {
        out / ".hidden.png": picture.read_bytes(),  # a dotfile (a copy of a listed picture)
        out / "a" / "b" / "deep.png": picture.read_bytes(),  # two folders down
        out / "page.html": b"<script>fetch('/gradio_api/info')</script>",  # would run in the app's origin
        out / "notes.txt": secret,
        server["tmp"] / "gradio" / "0123abcd" / "other-apps-file.txt": secret,  # Gradio's shared temporary folder
        server["root"] / "secret.txt": secret,
    }
    for path, data in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    link = picture.with_suffix(".mp4")  # a "video" beside a picture that is a link to another file
    link.symlink_to(server["root"] / "secret.txt")
    refused = [*planted, link, *out.glob("*.state.pt"), server["log"], out]
    assert any(p.name.endswith(".state.pt") for p in refused)
    time.sleep(1.5)
    answers = {str(p): get(file_url(base, p))[0] for p in refused}
    assert answers == {str(p): 403 for p in refused}
    for remote in ("https://example.org/x.png", "HTTP://example.org/x.png"):  # Gradio would fetch it
        assert get(f"{base}gradio_api/file={remote}")[:2] == (403, b"this server fetches nothing from the network")
    header = page.locator("#header").inner_text()
    assert str(out) not in header and str(server["root"]) not in header


def test_an_init_image_that_is_not_a_picture_or_too_large_is_refused_on_the_page(server, page):
    from PIL import Image

    text, huge = server["root"] / "notes.png", server["root"] / "huge.png"
    text.write_text("not a picture")
    Image.new("1", (20_000, 20_000)).save(huge)  # 400 million pixels in a small file
    field = page.locator("#field-init_image")
    fill(page, "prompt", PROMPT)
    fill(page, "seed", "11")
    before = status(page)
    for upload, problem in ((text, "is not a readable image"), (huge, "is too large to decode safely")):
        field.locator("input[type=file]").set_input_files(str(upload))
        page.wait_for_function("([id, name]) => document.getElementById(id).innerText.includes(name)",
                               arg=["field-init_image", upload.name])
        page.locator("#run").click()
        wait_shown(page, "message", rf"^⚠ the uploaded init-image {upload.name} {problem}")
        field.get_by_label("Clear").first.click()
    assert status(page) == before and shown(page, "queue") == ""  # nothing was queued


def test_a_runs_warnings_reach_the_page_and_a_10000_character_prompt_is_not_echoed_whole(server, page):
    page.reload()
    page.wait_for_selector("#gallery")
    gallery_at = page.locator("#gallery").bounding_box()["y"]
    long = ("a red circle on a blue background " * 300).strip()  # 10,199 characters, 2,100 tokens
    fill(page, "prompt", long)
    fill(page, "steps", "3")
    fill(page, "seed", "12")
    page.locator("#run").click()
    said = wait_shown(page, "message", r"submitted #\d+")
    assert said.startswith("submitted #") and len(said) < 200
    task = re.search(r"#(\d+)", said).group(1)
    warned = wait_shown(page, "warnings", r"^warning: prompt 'a red circle on a blue background a red '")
    lines = warned.splitlines()
    assert lines[0] == ("warning: prompt 'a red circle on a blue background a red '... is 2102 tokens; CLIP reads "
                        "the first 16 and ignores the rest")  # as the command line says it
    assert len(set(lines)) == len(lines)  # each once
    wait_status(page, rf"done #{task} ")
    assert page.locator("#gallery").bounding_box()["y"] < gallery_at + 250
    fill(page, "prompt", PROMPT)
    fill(page, "seed", "13")
    page.locator("#run").click()
    wait_status(page, r"done #\d+ a red circle on a blue background ·")
    assert not page.locator("#warnings").is_visible()  # a run without warnings shows none


def test_an_idle_tab_looks_at_the_queue_every_two_seconds_not_twice_a_second(server, browser):
    idle = browser.new_page()
    looks = []

    def count(request):
        if "/queue/join" in request.url:  # each look at the queue is one event sent to the server
            looks.append(round(time.monotonic(), 2))

    idle.on("request", count)
    idle.goto(server["url"])
    wait_status(idle, r"\S")
    idle.wait_for_timeout(3000)  # the page's first looks are done; nothing runs (Playwright counts meanwhile)
    before = len(looks)
    idle.wait_for_timeout(10_000)
    seen = looks[before:]
    idle.close()
    assert 3 <= len(seen) <= 6, seen  # twice a second would be 20


def select_newest(page, seed: int | None = None) -> dict:
    """Click the gallery's newest picture; its recipe, once the page shows one (with `seed`, that one's)."""
    page.locator("#gallery img").first.click()
    box = page.locator("#recipe textarea")
    page.wait_for_function("(seed) => document.querySelector('#recipe textarea').value.includes(seed)",
                           arg=f'"seed": {seed},' if seed is not None else "{")
    return json.loads(box.input_value())


def submit(page, press=lambda page: page.locator("#run").click()) -> str:
    """Press Run (or what `press` does); the number of the run the page says it submitted."""
    before = shown(page, "message")
    press(page)
    deadline = time.monotonic() + 60
    while shown(page, "message") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    return re.search(r"^submitted #(\d+)", wait_shown(page, "message", r"^submitted #\d+")).group(1)


def downloaded(page, button: str) -> tuple[str, bytes]:
    """The name and bytes of what a click on a download button saves."""
    with page.expect_download() as caught:
        page.locator(f"#{button}").click()
    return caught.value.suggested_filename, Path(caught.value.path()).read_bytes()


def test_ctrl_enter_runs_and_the_gallery_downloads_the_exact_png_and_its_video(server, page):
    import imageio.v2 as iio

    page.reload()
    page.wait_for_selector("#run")
    for name, value in (("prompt", PROMPT), ("steps", "20"), ("candidates", "1"), ("seed", "21"),
                        ("save_every", "2"), ("fps", "5")):
        fill(page, name, value)
    page.locator("#field-video input").check()
    task = submit(page, lambda page: page.locator("#field-prompt textarea").press("Control+Enter"))
    wait_status(page, rf"done #{task} ")
    picture = server["out"] / f"{PROMPT.replace(' ', '-')}-21.png"
    assert select_newest(page, 21)["seed"] == 21
    name, body = downloaded(page, "download-png")
    assert (name, body) == (picture.name, picture.read_bytes())  # the file itself: its pixels and its recipe
    name, body = downloaded(page, "download-video")
    assert (name, body) == (picture.with_suffix(".mp4").name, picture.with_suffix(".mp4").read_bytes())
    with iio.get_reader(picture.with_suffix(".mp4")) as video:
        assert (video.count_frames(), video.get_meta_data()["fps"]) == (10, 5.0)  # the form's save-every and fps
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-text textarea").fill("a green square")
    page.locator("#batch-text textarea").press("Control+Enter")  # in the Batch tab: Run batch, with the form's fields
    wait_shown(page, "message", r"^⚠ save-every has no effect in this run: it needs --video")
    page.get_by_role("tab", name="Draw").click()
    labels = [b.get_attribute("aria-label") or b.get_attribute("title") or b.inner_text()
              for b in page.locator("#preview button").all()]
    assert not [b for b in labels if re.search(r"share|download", b or "", re.IGNORECASE)], labels


def test_queued_runs_are_cancelled_and_a_second_click_on_a_fixed_seed_is_refused_before_queueing(server, page):
    high = next(o.high for o in OPTIONS if o.name == "steps")
    assert f"<= {high}" in page.locator("#field-steps").inner_text()  # the declared bound, on the form
    fill(page, "steps", "2000")
    fill(page, "seed", "31")
    page.locator("#field-video input").uncheck()
    fill(page, "save_every", "")
    fill(page, "fps", "")
    running = submit(page)
    assert re.search(r"step \d+/2000 · [\d.]+ it/s · ~\d+ (s|min) left", wait_status(page, r"it/s"))
    bar = page.locator("#progress progress")
    page.wait_for_function("() => Number(document.querySelector('#progress progress').value) > 0")
    assert bar.get_attribute("max") == "2000" and 0 < int(bar.get_attribute("value")) < 2000
    page.locator("#run").click()  # the same seed again: it would write the same file
    wait_shown(page, "message", rf"^⚠ #{running} \(running\) will write .*-31.png -- change the seed")
    fill(page, "seed", "32")
    waiting = submit(page)
    wait_shown(page, "queue", rf"Queued: #{waiting} ")
    page.locator("#cancel").click()
    wait_shown(page, "message", rf"^cancelled #{waiting}")
    wait_shown(page, "queue", r"^$")
    page.locator("#stop").click()
    wait_status(page, rf"stopped #{running}")
    assert not (server["out"] / f"{PROMPT.replace(' ', '-')}-32.png").exists()


def test_gallery_buttons_seed_buttons_and_the_offline_model_choice(server, page):
    assert page.locator("#field-model input").input_value() == "tiny (offline)"
    page.locator("#field-model input").click()
    assert page.get_by_role("option", name="default (not downloaded)").count() == 1
    page.keyboard.press("Escape")
    fill(page, "seed", "5")
    page.locator("#random-seed").click()
    wait_shown(page, "field-seed", r"^$")  # blank: a new random seed each run
    page.reload()
    page.wait_for_selector("#gallery img")
    recipe = select_newest(page)
    fill(page, "seed", "99")
    page.locator("#use-settings").click()
    wait_shown(page, "field-steps", rf"^{recipe['steps']}$")
    assert shown(page, "field-seed") == ""  # not the picture's seed: "use these settings" makes another picture
    page.locator("#use-seed").click()
    wait_shown(page, "field-seed", rf"^{recipe['seed']}$")
    write_screenshot(page)
    page.locator("#send-to-init").click()
    page.wait_for_function("() => document.getElementById('field-init_image').innerText.includes('.png')")
    fill(page, "steps", "3")
    fill(page, "seed", "41")
    task = submit(page)
    wait_status(page, rf"done #{task} ")
    made = read_recipe(server["out"] / f"{PROMPT.replace(' ', '-')}-41.png")
    assert made["init_image"] is not None and made["input_sha256"]
    shown_recipe = select_newest(page, 41)  # the recipe names the init image as it was sent, not by a server path
    assert (shown_recipe["seed"], shown_recipe["init_image"]) == (41, f"{PROMPT.replace(' ', '-')}-{recipe['seed']}.png")
    assert machine_paths(page) == []


def machine_paths(page) -> list[str]:
    """Absolute paths of this machine in the page's text and its fields' values (with what precedes them)."""
    text = page.locator("body").inner_text() + "\n".join(
        box.input_value() for box in page.locator("textarea, input[type=text]").all())
    return re.findall(r".{0,80}(?<![\w.])/(?:tmp|root|home|proc|etc|usr|var|work|srv)\b\S*", text)


def write_screenshot(page) -> None:
    """The page as it is now, without a path of this machine in its text (fields included); with
    CLIPGUIDE_UI_SCREENSHOT, into that file too (docs/ui.png)."""
    assert machine_paths(page) == []
    page.screenshot(path=os.environ.get("CLIPGUIDE_UI_SCREENSHOT"), full_page=True)  # no path: taken, not kept


def test_ctrl_c_stops_the_server_and_leaves_no_temporary_file(server):
    planted = server["tmp"] / "gradio" / "0123abcd" / "other-apps-file.txt"  # not the server's: it stays
    assert stop_server(server["proc"]) == 0
    left = [p for p in server["tmp"].rglob("*") if p.is_file() and p != planted]
    assert left == []
    assert "stopping" in server["log"].read_text()


def test_with_auth_the_server_answers_nothing_before_a_login_and_127_0_0_2_is_this_machine(tmp_path):
    passwords = tmp_path / "passwords"
    passwords.write_text("ann:correct horse battery\n")
    port = free_port()
    proc, log = start_server(tmp_path, ["--host", "127.0.0.2", "--port", str(port), "--auth", str(passwords),
                                        "--output-dir", str(tmp_path / "out")])
    try:
        base = f"http://127.0.0.2:{port}/"
        assert listening(port) == ["0200007F"]  # 127.0.0.2
        assert "not only on this machine" not in log.read_text()
        assert get(base + "gradio_api/info")[0] == 401
        assert get(file_url(base, passwords))[0] == 401
        form = urllib.parse.urlencode({"username": "ann", "password": "wrong"}).encode()
        assert get(base + "login", form)[0] == 400
        form = urllib.parse.urlencode({"username": "ann", "password": "correct horse battery"}).encode()
        code, _, cookies = get(base + "login", form)
        assert code == 200
        cookies = "; ".join(c.split(";")[0] for c in cookies)
        assert get(base + "gradio_api/info", headers={"Cookie": cookies})[0] == 200
    finally:
        assert stop_server(proc) == 0
