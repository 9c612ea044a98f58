"""Exceptions the CLI prints as one plain message instead of a traceback: bad input, diverged training."""


class InputError(ValueError):
    """Raised when user input (a file, column, value or parameter) cannot be used.

    The message always names the offending file, column or value and says what to do.
    """


class TrainingDivergedError(RuntimeError):
    """Raised when the −ELBO stops being a finite number: the optimiser diverged, and going on would
    export NaN abundances. The message names the epoch and the learning rate to lower."""


def format_errors(title: str, errors: list[str]) -> str:
    """Join several problems into one message, so users fix them all in one go."""
    lines = [f"{title} ({len(errors)} problem{'s' if len(errors) != 1 else ''}):"]
    lines += [f"  - {e}" for e in errors]
    return "\n".join(lines)
