"""The one exception type a user should see as a message, not a traceback."""

import sys


class UserError(Exception):
    """A mistake the user can fix: a bad flag, missing data, a corrupt checkpoint.

    Command-line entry points catch it, print `error: <message>` and exit with status 2.
    """


class MissingData(UserError):
    """A dataset is not under the data root and could not be downloaded (`check` reports such a stage as
    skipped, naming the files, rather than failed)."""


def exit_on_user_error(fn, *args, **kwargs):
    """Call fn; turn a UserError into a one-line message and exit status 2, and a Ctrl-C outside a training
    loop (which saves and exits by itself) into a short line and exit status 130."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("\ninterrupted outside the training loop; checkpoints already written are kept", file=sys.stderr)
        raise SystemExit(130) from None
