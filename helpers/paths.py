"""Paths as people type them, compared the way the file system sees them.

One place for what differs between Linux, macOS and Windows here:
  * `~` is expanded (the shell does not do it inside quotes, nor in main.py's settings);
  * a walk up a path ends at its root, also a drive letter with nothing mounted
    (`os.path.dirname('E:\\')` is `'E:\\'`, so a plain loop never stops there);
  * "is this inside that folder" is False across Windows drives (where
    `os.path.commonpath` raises) and True for a folder reached under another
    spelling on a case-insensitive file system (macOS, Windows): the file
    system's own identity of the folders (device and inode) decides.

`pathmod` lets the tests apply Windows rules (`ntpath`) on Linux.
"""
import os


def expand(path):
    """`path` with a leading `~` or `~user` expanded; None stays None."""
    return None if path is None else os.path.expanduser(os.fspath(path))


def nearest_existing(path, pathmod=os.path):
    """The nearest folder of `path` (or `path` itself) that exists, or None when not even its root
    does (a drive letter with nothing mounted, an unplugged disk)."""
    place = pathmod.abspath(path)
    while not os.path.exists(place):
        parent = pathmod.dirname(place)
        if parent == place:  # a root that is not there
            return None
        place = parent
    return place


def first_missing_folder(path, pathmod=os.path):
    """The outermost folder of `path` that does not exist yet (what making `path` would create first),
    or None when `path` exists. A missing root is returned as itself."""
    place, missing = pathmod.abspath(path), None
    while not os.path.exists(place):
        parent = pathmod.dirname(place)
        missing = place
        if parent == place:
            break
        place = parent
    return missing


def same_file(a, b):
    """True when `a` and `b` are the same existing file or folder, however each is spelt."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def inside(path, folder, pathmod=os.path):
    """True when `path` is `folder` or under it: by their spelling once links, `..` and case are
    resolved (never raising across drives), or by the file system's identity of the folders."""
    real, top = pathmod.normcase(pathmod.realpath(path)), pathmod.normcase(pathmod.realpath(folder))
    try:
        if pathmod.commonpath([real, top]) == top:
            return True
    except ValueError:  # Windows: other drives (C: and D:, or a \\server\share) have no common path
        pass
    if not os.path.isdir(folder):
        return False
    place = nearest_existing(path, pathmod)
    while place is not None:  # a case-insensitive file system: one folder, two spellings
        if same_file(place, folder):
            return True
        parent = pathmod.dirname(place)
        place = None if parent == place else parent
    return False
