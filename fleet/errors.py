"""The one error type of the operator's commands: a command that cannot go on raises a
FleetError (or one of its kinds: InventoryError, DeployError, BenchError, ImageError,
ReportError) whose message says what to fix; `python -m fleet` prints it as one line,
`fleet: error: <message>`, and exits 2."""


class FleetError(Exception):
    """A fleet command cannot go on; the message says what to fix."""
