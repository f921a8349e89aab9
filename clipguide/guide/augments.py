"""The augment table users pick from with --augments: name -> a Kornia augmentation and its arguments.

Data only (no torch here), so the command line can check a list of names without loading anything;
`cutouts.Cutouts` builds the Kornia modules from it."""

from __future__ import annotations

from ..errors import UserError
from ..values import turned_off

# name -> (kornia.augmentation class, keyword arguments)
AUGMENTS: dict[str, tuple[str, dict]] = {
    "affine": ("RandomAffine", dict(degrees=15, translate=(0.1, 0.1), p=0.7, padding_mode="border")),
    "shift": ("RandomAffine", dict(degrees=0, translate=(0.1, 0.1), p=0.7, padding_mode="border")),
    "perspective": ("RandomPerspective", dict(distortion_scale=0.7, p=0.7)),
    "jitter": ("ColorJitter", dict(hue=0.1, saturation=0.1, p=0.7)),
    "erasing": ("RandomErasing", dict(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True, p=0.7)),
    "flip": ("RandomHorizontalFlip", dict(p=0.5)),
    "sharpness": ("RandomSharpness", dict(sharpness=0.3, p=0.4)),
    "gray": ("RandomGrayscale", dict(p=0.1)),
}
DEFAULT_AUGMENTS = ("affine", "perspective", "jitter", "erasing")


def parse_augments(spec: str | None) -> tuple[str, ...]:
    """'affine,jitter' -> ('affine', 'jitter'); 'none' or '' -> (); None -> the defaults."""
    if spec is None:
        return DEFAULT_AUGMENTS
    if turned_off(spec):
        return ()
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise UserError(f"unknown augment {unknown[0]!r}", f"choose from {', '.join(AUGMENTS)} (or none)")
    return names


def build(name: str):
    """The Kornia module for one augment name."""
    import kornia.augmentation as K

    cls, kwargs = AUGMENTS[name]
    return getattr(K, cls)(**kwargs)
