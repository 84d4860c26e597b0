"""User-facing errors: one clear line, exit code 2, never a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad config, bad image); printed as one line, exit 2."""

    exit_code = 2
