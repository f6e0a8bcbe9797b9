"""The one exception type for bad user input (flags, files, data)."""


class UserError(Exception):
    """A problem the user can fix: a missing or corrupt file, a bad flag, mismatched data.

    The message is one line naming the file or flag and what to do. Scripts print it to stderr
    and exit with code 2, without a traceback.
    """
