"""The one exception type for problems a user can fix (bad file, bad option, bad config).

Scripts catch :class:`UserError` and print its message without a traceback; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message names the file or value and what was expected."""
