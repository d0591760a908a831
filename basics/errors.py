"""Errors that mean "the user asked for something wrong" (printed as one line, exit 2)."""


class UserError(ValueError):
    """A mistake in user input: bad flag, unknown task, missing file, malformed data.

    Entry points catch it, print ``error: <message>`` on one line to stderr and exit 2.
    Library code raises it (or a subclass) with the bad value and the valid options.
    """
