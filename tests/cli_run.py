"""Running the command line in-process, as the tests do."""

from typer.testing import CliRunner

from clipguide.cli import app


def run(*args):
    """(exit code, stdout, stderr) of `clipguide ARGS`."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr
