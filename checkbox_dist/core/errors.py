"""The exceptions library code raises; only the command line (checkbox_dist/cli.py) turns them into exit codes."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad config, bad image): one line on stderr, exit 2."""

    exit_code = 2


class Preempted(Exception):
    """A run stopped on request (SIGUSR1/SIGTERM/SIGINT, a RUN/STOP file) after saving what it needs to
    continue: exit 75 (EX_TEMPFAIL), which slurm/train.sh and slurm/sweep.sh requeue on."""

    exit_code = 75


class Interrupted(Preempted):
    """Ctrl-C (SIGINT): the run saved `last` like a preemption, but exits 130, as an interrupted command does."""

    exit_code = 130
