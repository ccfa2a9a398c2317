"""What every ``rpu`` sub-command shares: its exit codes and the usage error (no import cycle)."""

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3


class UsageError(Exception):
    """A command used wrongly: its message is shown in French and the exit code is 2."""
