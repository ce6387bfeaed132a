"""Running the project's scripts from the tests, as a user runs them.

`run` starts a script (main.py, train.py) or a `-m tools.X` module as its own
process: for what only a fresh process shows (start-up imports, Ctrl-C,
the excepthook's exit); tests that use it are marked slow.
`in_process` (and `main`, `train`) runs one inside the test process through
runpy, with the same exit codes and one-line errors, without paying Python's
and torch's start-up (seconds on a 2-core CPU) each time.
"""
import contextlib
import io
import os
import re
import runpy
import signal
import subprocess
import sys
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCURACY = re.compile(r'^Accuracy of the model on the test images: (\d+(\.\d+)?) %$', re.M)


def run(script, *args, cwd=ROOT, timeout=300, env=None):
    """`script` ('main.py', 'train.py', a path, or '-m tools.NAME') in a subprocess; its CompletedProcess."""
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '2', **(env or {})}
    command = script.split() if script.startswith('-m ') else [os.path.join(ROOT, script)]
    return subprocess.run([sys.executable, *command, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def in_process(script, *args, cwd=ROOT):
    """`script` ('main.py', 'train.py', a path, or '-m tools.NAME') run by runpy in this process, as
    `python SCRIPT ARGS` from `cwd`: returncode, stdout and stderr like `run`'s (a Mistake's line on stderr)."""
    out, err = io.StringIO(), io.StringIO()
    module = script[3:] if script.startswith('-m ') else None
    path = None if module else os.path.join(ROOT, script)
    saved = sys.argv, sys.excepthook, signal.getsignal(signal.SIGINT), os.getcwd(), signal.getsignal(signal.SIGTERM)
    sys.argv = [path or module, *map(str, args)]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if module:
                    runpy.run_module(module, run_name='__main__', alter_sys=True)
                else:
                    runpy.run_path(path, run_name='__main__')
            except SystemExit as e:  # as Python ends on one: an int is the code, a text is printed, code 1
                code = e.code if isinstance(e.code, int) or e.code is None else 1
                if not isinstance(e.code, int) and e.code is not None:
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv, sys.excepthook = saved[:2]
        signal.signal(signal.SIGINT, saved[2])
        os.chdir(saved[3])
        signal.signal(signal.SIGTERM, saved[4])
    return SimpleNamespace(returncode=code or 0, stdout=out.getvalue(), stderr=err.getvalue())


def main(*args, script='main.py', cwd=ROOT):
    """main.py (or an edited copy of it, `script`) in this process."""
    return in_process(script, *args, cwd=cwd)


def train(*args, cwd=ROOT):
    """train.py in this process."""
    return in_process('train.py', *args, cwd=cwd)


def one_line_error(r, pattern, code=1):
    """`r` ended in exactly one line of error matching `pattern`, with exit code `code`, and no traceback."""
    assert r.returncode == code, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr
