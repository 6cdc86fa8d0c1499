"""The one error type a user fixes by changing an option or an input (the command line prints it as one
line and exits with status 2, before any expensive work)."""


class SettingsError(ValueError):
    """Settings or inputs that cannot work; the message names the option or file and what to do."""


__all__ = ["SettingsError"]
