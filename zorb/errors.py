"""User-facing errors: each carries one sentence that says what to change."""


class ZorbError(Exception):
    """Base class of every error zorb raises on purpose."""


class ConfigError(ZorbError, ValueError):
    """A configuration that cannot work: bad layer stack, parameter or option."""


class DataError(ZorbError, ValueError):
    """A dataset that cannot be read or prepared as asked."""


class FitError(ZorbError, ArithmeticError):
    """The fit produced a non-finite weight or target."""
