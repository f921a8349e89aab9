"""`clipguide-ui` (also `python -m clipguide.ui`): start the web UI and keep it until Ctrl-C.

It listens on 127.0.0.1 unless `--host` names another address; an address beyond this machine
needs `--auth FILE` (Gradio's login, with the `user:password` lines of FILE) and is said aloud.
Ctrl-C or SIGTERM stops the running job as Ctrl-C stops the command line (its picture and state are
saved), cancels the queued ones, closes the server and removes its temporary folder, where Gradio's
own temporary files go too (not Gradio's shared folder, whose files it would otherwise serve).
Nothing is fetched from the network: Gradio's analytics are off, the page's fonts are the system's,
the default model is the built-in tiny pair, and Gradio's file route does not fetch an http(s)
address for whoever asks (`LocalFilesOnly`)."""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_OK, UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipguide-ui", description="clipguide's local web UI: draw, watch, stop, "
                                "resume, batches and the gallery of the output folder.")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--output-dir", default="outputs", help="where pictures go and what the gallery shows "
                   "(default: outputs)")
    p.add_argument("--model", default="tiny", help="the model preset the form starts with (default: tiny, "
                   "built in, offline)")
    p.add_argument("--auth", default=None, metavar="FILE", help="ask for a user name and password (lines "
                   "user:password in FILE); needed with a --host beyond this machine")
    return p


def loopback(host: str) -> bool:
    """True for an address of this machine only: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """What to say when the server listens beyond this machine."""
    if loopback(host):
        return None
    return (f"listening on {host}, not only on this machine: anyone who can reach it and log in can start runs "
            "and see the output folder's pictures")


def read_auth(text: str, name: str = "the --auth file") -> dict[str, str]:
    """The users and passwords of `user:password` lines ('#' starts a comment)."""
    users = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon or not user.strip() or not password:
            raise UserError(f"line {n} of {name} is not user:password", "write one user:password per line")
        users[user.strip()] = password
    if not users:
        raise UserError(f"{name} has no user:password line", "write one user:password per line")
    return users


def login(path: str | None, host: str):
    """Gradio's `auth` for --auth FILE: a check that waits a second after a wrong password."""
    if path is None:
        if not loopback(host):
            raise UserError(f"--host {host} lets other machines in, and they would need no password",
                            "give --auth FILE with lines user:password, or leave --host out (this machine only)")
        return None
    try:
        users = read_auth(Path(path).read_text(encoding="utf-8"), f"--auth {path}")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --auth {path} ({getattr(e, 'strerror', None) or e})",
                        "give a text file with lines user:password") from None

    async def check(user: str, password: str) -> bool:
        known = users.get(user)
        if known is not None and hmac.compare_digest(known.encode(), password.encode()):
            return True
        await asyncio.sleep(1.0)  # guessing is slow
        return False

    return check


def _warm_up() -> None:
    """Import torch and the run layer in the background, so the first run starts at once.  It only saves
    time: when it fails (the server stopping at once, e.g. its port taken, ends the process mid-import) it
    says nothing, and the first run imports them again and says what is wrong."""

    def warm():
        try:
            __import__("clipguide.run")
        except Exception:  # noqa: S110 -- see above: the first run imports it again, loudly
            pass

    threading.Thread(target=warm, daemon=True).start()


class LocalFilesOnly:
    """ASGI middleware: `/gradio_api/file=<http(s) address>` is refused (Gradio would fetch it for the
    caller: this server fetches nothing from the network)."""

    REMOTE = re.compile(r"/file=\s*https?:", re.IGNORECASE)

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.REMOTE.search(scope.get("path", "")):
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("this server fetches nothing from the network", 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _launch(page, host: str, port: int | None, auth):
    import gradio as gr
    from starlette.middleware import Middleware

    from .page import CSS, KEYS_JS

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    # allowed_paths: none yet; each look at the gallery sets them to the files it lists (page.refresh)
    return page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, theme=theme,
                       css=CSS, js=KEYS_JS, share=False, footer_links=[], max_file_size="64mb", ssr_mode=False,
                       allowed_paths=[], auth=auth, auth_message="clipguide: log in with a user of the --auth file",
                       app_kwargs={"middleware": [Middleware(LocalFilesOnly)]})


def _own_temp_folder(folder: Path) -> None:
    """Gradio's temporary files (uploads, the pictures it hands out) into the server's own folder."""
    for name, sub in (("GRADIO_TEMP_DIR", "gradio"), ("GRADIO_EXAMPLES_CACHE", "gradio-examples")):
        os.environ[name] = str(folder / sub)
    os.environ.pop("GRADIO_ALLOWED_PATHS", None)  # what is served is the gallery's, never more


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .app import App

    host = args.host or "127.0.0.1"
    try:
        if args.port is not None and not 0 < args.port < 65536:
            raise UserError(f"--port {args.port} is not a port", "give a number from 1 to 65535, or leave it out")
        auth = login(args.auth, host)
        app = App(args.output_dir, args.model, log=lambda m: print(f"clipguide-ui: {m}", flush=True))
    except UserError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _start(app, host, args.port, auth)
    except UserError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        app.close()  # the running job saves; the temporary folder goes, however the server ends


def _start(app, host: str, port: int | None, auth) -> int:
    """Build the page, listen, say where, and serve until Ctrl-C."""
    _own_temp_folder(app.uploads.folder)  # before Gradio is imported: it reads them once
    try:
        from .page import build
    except ImportError as e:
        raise UserError(f"the web UI needs Gradio ({e})", "pip install 'clipguide[ui]'") from None
    _warm_up()
    page = build(app)
    try:
        _, url, _ = _launch(page, host, port, auth)
    except OSError as e:
        reason = str(e).split(". ")[0]  # Gradio goes on with advice about its own API
        raise UserError(f"cannot listen on {host}:{port} ({reason})", "choose another --port") from None
    if host_warning(host):
        print(f"clipguide-ui: {host_warning(host)}", flush=True)
    print(f"clipguide-ui: open {url} (output folder {app.output_dir}; Ctrl-C stops)", flush=True)
    return _serve(page)


def _serve(page) -> int:
    """Wait for Ctrl-C or SIGTERM; then close the server (main then stops the running job, which saves)."""
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    while not signals:
        time.sleep(0.2)
    print("clipguide-ui: stopping (a running job saves its picture and state)", flush=True)
    page.close()  # no page writes into the temporary folder any more
    return EXIT_OK
