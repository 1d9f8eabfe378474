"""User-facing errors: each says what is wrong and how to fix it; kdx prints it without a traceback."""


class KdxError(Exception):
    """A problem with the user's input (config, data, models) rather than a bug in kdx."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")
