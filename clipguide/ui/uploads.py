"""Where what a page sends is kept: a temporary folder of the server's own, under generated names.

The browser never names a server path: Gradio accepts only files uploaded to its own cache, and
each one is copied here under a random name (its suffix kept only when it is a known picture or
text suffix), as is a pasted prompt file; `names` keeps what each copy was called in the browser,
so that a message names the file the user sent, not the server's copy.  The folder lives as long as the server; serve.py puts
Gradio's own temporary files in it too (its subfolder `gradio/`), so they go with it."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from ..errors import UserError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LARGEST = 64 * 2**20  # bytes of one upload


class Uploads:
    def __init__(self, parent: str | Path | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="clipguide-ui-", dir=parent))
        self.names: dict[str, str] = {}  # the path of a copy -> the name the user knows it by

    def _name(self, suffix: str) -> Path:
        return self.folder / f"{uuid.uuid4().hex}{suffix}"

    def picture(self, source: str | Path, what: str = "picture") -> Path:
        """A copy of an uploaded picture, under a generated name, once its header was read: a file that is
        not a picture, or is too large to decode, is one line naming it as the browser sent it."""
        from ..images import opened  # torch: already loaded in the server (serve.py warms it up)

        source = Path(source)
        if not source.is_file():
            raise UserError(f"the uploaded {what} is gone", f"upload the {what} again")
        if source.stat().st_size > LARGEST:
            raise UserError(f"the uploaded {what} is larger than {LARGEST // 2**20} MiB", "upload a smaller picture")
        with opened(source, f"the uploaded {what} {source.name}"):
            pass
        suffix = source.suffix.lower() if source.suffix.lower() in PICTURE_SUFFIXES else ".img"
        target = self._name(suffix)
        shutil.copyfile(source, target)
        self.names[str(target)] = source.name
        return target

    def text(self, text: str, name: str = "the pasted prompts", prefix: str = "prompts-") -> Path:
        """A prompt file written from text the page sent, under a generated name."""
        target = self.folder / f"{prefix}{uuid.uuid4().hex[:12]}.txt"
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        self.names[str(target)] = name
        return target

    def text_file(self, source: str | Path) -> str:
        """The text of an uploaded prompt file."""
        source = Path(source)
        if not source.is_file():
            raise UserError("the uploaded prompt file is gone", "upload it again")
        if source.stat().st_size > LARGEST:
            raise UserError("the uploaded prompt file is too large", "upload a smaller file")
        try:
            return source.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError("the uploaded prompt file is not UTF-8 text", "upload a plain text file") from None

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
