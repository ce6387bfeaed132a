"""Paths: one way to show them, one message for a path that is not there, one rule for every file the package
writes. Places are compared by the file system's identity (samefile): links, `..` and letter case need no rules."""
import os
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
    if not os.fspath(path).isprintable():
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


def check_output(path, flag, reading=(), suffixes=CHECKPOINT_SUFFIXES, begins=TORCH_SAVED):
    """Stop, before any work, unless `path` may take a file this run writes. The one rule: a name ending in one of
    `suffixes`, new or a regular file of our kind, not read by the run, not in checkpoints/, in a writable place."""
    path = os.fspath(path)
    if os.path.isdir(path) or not path.endswith(suffixes):
        raise Mistake(f'{flag} {shown(path)}: give a file name ending in {" or ".join(suffixes)}, '
                      f'e.g. {flag} outputs/model{suffixes[0]}')
    if os.path.exists(path) and not os.path.isfile(path):
        raise Mistake(f'{flag} {shown(path)} is not a regular file (a device?); choose another {flag}')
    for other in reading:
        if other and same(path, other):
            raise Mistake(f'{flag} {shown(path)} is the file this run starts from ({shown(other)}), which it would '
                          f'replace; give {flag} a new file, e.g. {flag} outputs/model{suffixes[0]}')
    if os.path.isfile(path) and os.path.getsize(path):  # replaced only if it is a file of the kind written there
        with open(path, 'rb') as f:
            head = f.read(max(map(len, begins)))
        if not head.startswith(begins):
            raise Mistake(f'{flag} {shown(path)} is a file of another kind, which {flag} would replace; choose '
                          f'another name, e.g. {flag} outputs/model{suffixes[0]}')
    if inside(path, SHIPPED):
        raise Mistake(f'{flag} {shown(path)}: {SHIPPED} holds only the shipped checkpoints; choose another {flag} '
                      '(maintainers replace one with python -m tools.ship_checkpoint)')
    place = next((p for p in _places(os.path.dirname(os.path.abspath(path))) if os.path.exists(p)), None)
    if place is None:  # not even its root: a drive letter with nothing mounted, an unplugged disk
        raise Mistake(f'{flag} {shown(path)}: {os.path.splitdrive(os.path.abspath(path))[0] or "/"} is not there '
                      f'(no drive or disk mounted?); choose another {flag}')
    if not os.path.isdir(place):
        raise Mistake(f'{flag} {shown(path)}: {shown(place)} is a file, not a folder; choose another {flag}')
    try:  # the nearest existing folder must take files: the missing ones are made in it
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as e:
        raise Mistake(f'{flag} {shown(path)}: cannot write in {shown(place)} ({e.strerror or e}); '
                      f'choose another {flag}') from None


def write_atomic(path, write):
    """Fill `path` by `write(file)` whole or not at all: a temporary file beside it, renamed into place."""
    folder, tmp = os.path.dirname(os.path.abspath(path)), ''
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
        with os.fdopen(fd, 'wb') as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; give the usual permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:160]
        raise Mistake(f'cannot write {shown(path)} ({why}); free some space or choose another place') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    SAVED.append(path)
