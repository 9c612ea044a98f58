"""One exception type for bad user input, so the CLI can print it plainly instead of a traceback."""


class InputError(ValueError):
    """Raised when user input (a file, column, value or parameter) cannot be used.

    The message always names the offending file, column or value and says what to do.
    """


def format_errors(title: str, errors: list[str]) -> str:
    """Join several problems into one message, so users fix them all in one go."""
    lines = [f"{title} ({len(errors)} problem{'s' if len(errors) != 1 else ''}):"]
    lines += [f"  - {e}" for e in errors]
    return "\n".join(lines)
