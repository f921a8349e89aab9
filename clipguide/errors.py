"""Errors a user can cause, and the exit codes the CLI maps them to."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Something the user asked for cannot be done; `fix` says what to do instead.

    The CLI prints it as one line and exits with code 2, without a traceback.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem} -- {self.fix}" if self.fix else self.problem


class RunFailed(Exception):
    """A run started but could not finish (e.g. the loss became NaN); exit code 1."""


class Interrupted(Exception):
    """The run was stopped by SIGINT/SIGTERM after saving its state; exit code 130.  `others`: the
    further state files it saved (a preview's other seeds), any of which goes on as well."""

    def __init__(self, state_path, image_path, others=()):
        self.state_path = state_path
        self.image_path = image_path
        self.others = list(others)
        super().__init__(f"interrupted; state saved to {state_path}")
