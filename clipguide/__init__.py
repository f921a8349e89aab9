"""clipguide: pictures from text by CLIP-guided VQGAN."""

__version__ = "0.1.0"

from .api import Job, Result, Session, generate  # noqa: E402
from .settings import Settings  # noqa: E402

__all__ = ["generate", "Session", "Settings", "Job", "Result", "__version__"]
