"""Paths: one way to show them, one message for a path that is not there, one rule for every file the package
writes. Places are compared by the file system's identity (samefile): links, `..` and letter case need no rules."""
import errno
import io
import os
import sys
import tempfile

from helpers.errors import SAVED, Mistake

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(PROJECT, 'checkpoints')  # the shipped checkpoints: nothing is written there
CHECKPOINT_SUFFIXES = ('.ckpt', '.pt', '.pth', '.tar')
TORCH_SAVED = (b'PK\x03\x04', b'\x80')  # how torch.save's files begin: its zip, or a legacy pickle


def expand(path):
    """`path` with `~` expanded (a shell leaves it in quotes, Python always); None stays None."""
    return None if path is None else os.path.expanduser(os.fspath(path))


def shown(path):
    """`path` as a message shows it: quoted where bare text would hide an empty path, end spaces or a '\\r'."""
    text = os.fspath(path)
    return repr(text) if not text or text != text.strip() or not text.isprintable() else text


def missing(path, what, hint):
    """The Mistake for `what` (a checkpoint, the data folder...) not found at `path`, with what to do."""
    if any(ord(c) < 32 for c in os.fspath(path)):  # not isprintable(): a cp949 name on Linux is not, and has no escape
        hint = "a backslash in a Python string starts an escape ('\\r' is a carriage return): write the path with /"
    elif os.sep == '/' and '\\' in os.fspath(path):
        hint = 'on Linux and macOS folders are separated by /, not \\: write the path with /'
    elif path and not os.path.isabs(path) and os.path.exists(os.path.join(PROJECT, path)) and not same(PROJECT, '.'):
        hint = f'relative paths start from the folder you run in: cd {shown(PROJECT)} first'
    where = f' (looked in {shown(os.path.abspath(path))})' if path else ''
    return Mistake(f'{what} not found: {shown(path)}{where}; {hint}')


def same(a, b):
    """True when `a` and `b` are the same existing file or folder, however each is spelt."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _places(path):
    """`path` made absolute, then each folder above it up to its root."""
    place = os.path.abspath(path)
    while os.path.dirname(place) != place:
        yield place
        place = os.path.dirname(place)
    yield place


def inside(path, folder):
    """True when `path` is `folder` or under it, links followed (where `folder` is not made yet: by spelling)."""
    if not os.path.exists(folder):
        real, top = (os.path.normcase(os.path.realpath(p)) for p in (path, folder))
        return real == top or real.startswith(top.rstrip(os.sep) + os.sep)
    return any(same(place, folder) for place in _places(os.path.realpath(path)))


def check_output(path, flag, reading=(), suffixes=CHECKPOINT_SUFFIXES, begins=TORCH_SAVED, example=None):
    """Stop, before any work, unless `path` may take a file this run writes (the rule: docs/robustness.md). The line
    names the setting once (`flag`: '--out', 'out in main.py'...), then `example` as the person would type it."""
    path, example = os.fspath(path), example or f'{flag.split()[-1]} outputs/model{suffixes[0]}'

    def refuse(why, fix='; choose another'):
        raise Mistake(f'{flag} {shown(path)}{why}{fix}, e.g. {example}')
    if os.path.isdir(path) or not path.endswith(suffixes):
        refuse(f': give a file name ending in {" or ".join(suffixes)}', '')
    if os.path.exists(path) and not os.path.isfile(path):
        refuse(' is not a regular file (a device?)')
    for other in reading:
        if other and same(path, other):
            refuse(f' is the file this run starts from ({shown(other)}), which it would replace')
    if os.path.isfile(path) and os.path.getsize(path):  # replaced only if it is a file of the kind written there
        with open(path, 'rb') as f:
            if not f.read(max(map(len, begins))).startswith(begins):
                refuse(' is a file of another kind, which this run would replace')
    if inside(path, SHIPPED):
        refuse(f': {SHIPPED} holds only the shipped checkpoints (maintainers replace one with '
               'python -m tools.ship_checkpoint)')
    place = next((p for p in _places(os.path.dirname(os.path.abspath(path))) if os.path.exists(p)), None)
    if place is None:  # not even its root: a drive letter with nothing mounted, an unplugged disk
        refuse(f': {os.path.splitdrive(os.path.abspath(path))[0] or "/"} is not there (no drive or disk mounted?)')
    if not os.path.isdir(place):
        refuse(f': {shown(place)} is a file, not a folder')
    try:  # what write_atomic will do, in the nearest existing folder: a name too long fails here, not after the run
        fd, tmp = _temporary(place, path)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        refuse(f': cannot write in {shown(place)} ({e.strerror or e})')


def _temporary(folder, path):  # write_atomic's temporary file for `path`: hidden, in `folder`, named after it
    return tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)


def write_atomic(path, write):
    """Fill `path` by `write(file)` whole or not at all, in memory first (a full disk is then our OSError, not the
    serialiser's), then a temporary file beside it renamed into place; an earlier file replaced is named."""
    folder, tmp, data = os.path.dirname(os.path.abspath(path)), '', io.BytesIO()
    try:
        write(data)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = _temporary(folder, path)
        with os.fdopen(fd, 'wb') as f:
            f.write(data.getbuffer())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; give the usual permissions
        replaced = os.path.exists(path)
        os.replace(tmp, path)
    except OSError as e:
        fix = 'free some space or ' * (e.errno == errno.ENOSPC)
        raise Mistake(f'cannot write {shown(path)} ({e.strerror or e}); {fix}choose another place') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if replaced and os.fspath(path) not in SAVED:  # a file rewritten as a run goes on (a table, a state): once
        print(f'replaced the earlier {shown(path)}', file=sys.stderr)
    SAVED.append(os.fspath(path))
