"""tqdm's bar in a terminal or Jupyter (tqdm.auto); none where output goes to a file, so a log holds no bar updates."""
from tqdm.auto import tqdm

from helpers.errors import ipython


def progress(iterable, desc):
    return tqdm(iterable, desc=desc, leave=False, disable=None if ipython() is None else False)
