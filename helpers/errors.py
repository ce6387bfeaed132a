"""The mistakes people make end in one line that says what to do, not a traceback.

Three kinds, each message saying what to do: UsageError (a setting that
cannot work here), CheckpointError (a checkpoint or training state that
cannot be used) and DataError (data the user can fix). `install` makes a
script end on any of them with `error: MESSAGE` (exit 1), and on Ctrl-C with
a line that says what was saved before it (exit 130).
"""
import os
import sys
import time


class UsageError(Exception):
    """A setting that cannot work here; the message says what to do."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


class DataError(Exception):
    """A problem with the data that the user can fix; the message says how."""


def one_line(error):
    """(exit code, the line to print) for an error people can fix, else None."""
    from helpers.checkpoints import SAVED  # which imports this module
    if isinstance(error, KeyboardInterrupt):
        saved = f"saved before that: {', '.join(SAVED)}" if SAVED else 'nothing new was saved'
        return 130, (f'\ninterrupted: stopped before the end; {saved} '
                     '(no file is left half-written; other files are as they were)')
    if isinstance(error, (CheckpointError, DataError, UsageError)):
        return 1, f'error: {error}'
    return None


def _hook(kind, value, tb):
    sys.stdout.flush()
    known = one_line(value)
    if known is None:
        sys.__excepthook__(kind, value, tb)
        return
    code, line = known
    if os.environ.get('RANK', '0') != '0':
        # under torchrun every process meets the same mistake, and torchrun stops the others as soon as one
        # ends: rank 0 says it; another rank says it only if it is still running a moment later (its own)
        time.sleep(2)
    print(line, file=sys.stderr, flush=True)
    os._exit(code)


def install():
    """Known mistakes and Ctrl-C end in one line, not a traceback (exit 1, or 130 for Ctrl-C)."""
    sys.excepthook = _hook
