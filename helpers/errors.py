"""The mistakes people make end in one line that says what to do, not a traceback.

Three kinds, each message saying what to do: UsageError (a setting that
cannot work here), CheckpointError (a checkpoint or training state that
cannot be used) and DataError (data the user can fix). `install` makes a
script end on any of them with `error: MESSAGE` (exit 1), and on Ctrl-C with
a line that says what was saved before it (exit 130). In a notebook (IPython,
Jupyter, Colab) the same line is shown under the cell, and the kernel lives on.
Output never fails on a character the console's encoding lacks (a Windows
console in cp949, say, and a path with 'é'): it is written escaped instead.
"""
import os
import sys
import textwrap
import time


SAVED = []  # every file this process wrote (helpers/checkpoints.py adds them), for the Ctrl-C line


class UsageError(Exception):
    """A setting that cannot work here; the message says what to do."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


class DataError(Exception):
    """A problem with the data that the user can fix; the message says how."""


def reason(error, width=200):
    """An exception's first line, cut at a word (not in the middle of one) when longer than `width`."""
    text = str(error).strip()
    return textwrap.shorten(text.splitlines()[0], width, placeholder=' ...') if text else type(error).__name__


def one_line(error):
    """(exit code, the line to print) for an error people can fix, else None."""
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


def ipython_shell():
    """The IPython shell running this code (a notebook cell, %run, an IPython console), or None."""
    ipython = sys.modules.get('IPython')
    return ipython.get_ipython() if ipython and hasattr(ipython, 'get_ipython') else None


def _in_one_line(show_traceback):
    """IPython's showtraceback, saying the package's own mistakes (and Ctrl-C) in their one line instead.
    It is what both a cell and %run call for an exception (neither calls sys.excepthook)."""
    def showtraceback(exc_tuple=None, *args, **kwargs):
        value = (exc_tuple or sys.exc_info())[1]
        known = one_line(value) if value is not None else None
        if known is None:
            return show_traceback(exc_tuple, *args, **kwargs)
        print(known[1].strip(), file=sys.stderr, flush=True)  # and the kernel goes on: no exit
    showtraceback.one_line = True
    return showtraceback


def install():
    """Known mistakes and Ctrl-C end in one line, not a traceback (exit 1, or 130 for Ctrl-C)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):  # a replaced stream (a test's, an IDE's) may lack it
            stream.reconfigure(errors='backslashreplace')
    shell = ipython_shell()
    if shell is not None and not getattr(shell.showtraceback, 'one_line', False):
        shell.showtraceback = _in_one_line(shell.showtraceback)
    sys.excepthook = _hook
