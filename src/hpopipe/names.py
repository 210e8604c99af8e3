"""The one check for a user-given name: study, MLflow experiment, registered model, deployment.

Such a name ends up as a database key, a folder, a URL segment or a word in
someone's shell history, so it is refused (never silently rewritten) when it
could do something other than name: a path separator or ``..`` could escape a
folder, a control character could forge a log line, a shell metacharacter
could run a command if anyone pastes it unquoted.
"""

from __future__ import annotations

from hpopipe.errors import HpopipeError

MAX_NAME_LENGTH = 128
SHELL_METACHARACTERS = frozenset(";|&$`<>*?(){}[]!'\"")


def _shown(value: str) -> str:
    # repr escapes NUL and line breaks, so the message stays one line; long names are cut.
    return repr(value if len(value) <= 40 else value[:40] + "...")


def name_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a name, or None when it is fine."""
    if not isinstance(value, str):
        return f"must be text, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    bad_control = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad_control is not None:
        return f"{_shown(value)} contains the control character {bad_control!r}"
    for sep in ("/", "\\"):
        if sep in value:
            return f"{_shown(value)} contains {sep!r} (a name is not a path)"
    if ".." in value:
        return f"{_shown(value)} contains '..'"
    shell = next((c for c in value if c in SHELL_METACHARACTERS), None)
    if shell is not None:
        return f"{_shown(value)} contains the shell metacharacter {shell!r}"
    if value != value.strip():
        return f"{_shown(value)} starts or ends with whitespace"
    return None


def check_name(value: object, field: str) -> str:
    """Return ``value`` if it is a safe name; otherwise raise an error naming ``field``.

    Args:
        value: the name as the user gave it.
        field: where it came from, e.g. ``--study`` or ``HPOPIPE_EXPERIMENT``.
    """
    problem = name_problem(value)
    if problem is not None:
        raise HpopipeError(f"{field}: {problem}")
    assert isinstance(value, str)
    return value
