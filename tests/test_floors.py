"""The lower bounds pyproject.toml declares are the versions the floors step of .ci/run installs."""

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own tomli
    import tomli as tomllib

ROOT = Path(__file__).parent.parent


def lower_bounds() -> dict[str, Version]:
    """name -> the version of each `>=` bound of the dependencies and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    bounds = {}
    for req in map(Requirement, lines):
        for spec in req.specifier:
            if spec.operator == ">=":
                bounds[canonicalize_name(req.name)] = Version(spec.version)
    return bounds


def floors() -> dict[str, Version]:
    """name -> the version .ci/floors.txt pins."""
    pins = [Requirement(line) for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): Version(str(r.specifier).removeprefix("==")) for r in pins}


def test_every_lower_bound_is_a_floor_the_ci_installs_and_no_other():
    assert floors() == lower_bounds()
