"""Mistakes end in one line that says what to do: a `Mistake` is a SystemExit, which Python prints and exits 1.
`install` adds what cases need (docs/robustness.md): Ctrl-C or kill, unwritable output, notebooks, main.py's lines."""
import os
import signal
import sys
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED = []  # the files this process wrote, for the Ctrl-C line
GO_ON = {}  # a file in SAVED -> the command that goes on from it (train.py's state)


class Mistake(SystemExit):
    def __init__(self, message):
        super().__init__(f'error: {message}')


class _Output:
    """stdout whose failures are not the run's: after a write fails, the rest goes to os.devnull."""

    def __init__(self, stream):
        self.stream = stream

    def _guard(self, call, *args):
        try:
            call(*args)
        except (OSError, ValueError):  # a closed pipe, a full disk, a closed stream
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            except (OSError, ValueError, AttributeError):
                self.stream = open(os.devnull, 'w')

    def write(self, text):
        self._guard(self.stream.write, text)
        return len(text)

    def flush(self):
        self._guard(self.stream.flush)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _saved():
    saved = f"saved before that: {', '.join(dict.fromkeys(SAVED))}" if SAVED else 'nothing new was saved'
    go_on = [f'; go on: {GO_ON[path]}' for path in SAVED if path in GO_ON][-1:]
    return f'interrupted; {saved} (no file is left half-written)' + ''.join(go_on)


def _interrupted(signum, frame):  # Ctrl-C, or SIGTERM (kill, a cluster's time limit): the same line
    print('\n' + _saved(), file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _hook(kind, value, tb):
    """An error whose last frame of ours is a top-level line of the script run: that line; else a traceback."""
    def where(name):  # compared as the file system spells it (drive and letter case on Windows)
        return os.path.normcase(os.path.abspath(name))
    script = where(getattr(sys.modules.get('__main__'), '__file__', None) or '?')
    ours = [f for f in traceback.extract_tb(tb) if where(f.filename) == script
            or where(f.filename).startswith(where(ROOT) + os.sep)]
    if ours and ours[-1].name == '<module>' and where(ours[-1].filename) == script:
        first = (str(value).strip().splitlines() or [''])[0]
        print(f'error: {os.path.basename(script)} line {ours[-1].lineno}, `{ours[-1].line}`: {kind.__name__}: '
              f'{first}; fix that line', file=sys.stderr, flush=True)
        os._exit(1)
    sys.__excepthook__(kind, value, tb)


def ipython():
    """The IPython shell running this code (a notebook cell, %run), or None."""
    module = sys.modules.get('IPython')
    return module.get_ipython() if module and hasattr(module, 'get_ipython') else None


def install():
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    if not isinstance(sys.stdout, _Output):
        sys.stdout = _Output(sys.stdout or open(os.devnull, 'w'))  # None: started with stdout closed (`>&-`)
    shell = ipython()
    if shell is None:
        sys.excepthook = _hook
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupted)
    elif not getattr(shell.showtraceback, 'one_line', False):  # what a cell and %run call on an error
        show = shell.showtraceback

        def showtraceback(exc_tuple=None, *args, **kwargs):
            error = (exc_tuple or sys.exc_info())[1]
            if isinstance(error, (Mistake, KeyboardInterrupt)):
                return print(error.code if isinstance(error, Mistake) else _saved(), file=sys.stderr)
            return show(exc_tuple, *args, **kwargs)
        showtraceback.one_line = True
        shell.showtraceback = showtraceback
        warnings.filterwarnings('ignore', "To exit: use 'exit', 'quit', or Ctrl-D.")
