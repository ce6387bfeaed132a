"""tqdm's bar in a terminal and its notebook bar in Jupyter (tqdm.auto); none where output goes to a file or an
IDE's console, which get main.py's loss line every 100 steps, so that a log holds no bar updates."""
from tqdm.auto import tqdm

from helpers.errors import ipython


def progress(iterable, desc):
    return tqdm(iterable, desc=desc, leave=False, disable=None if ipython() is None else False)
