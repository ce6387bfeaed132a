"""Progress through an epoch or a test pass: tqdm's bar in a terminal, its
notebook bar in Jupyter and Colab (tqdm.auto); none where output goes to a file
or an IDE's console without a terminal, which get main.py's loss line every 100
steps instead, so that a log holds no bar updates."""
from tqdm.auto import tqdm

from helpers.errors import ipython


def progress(iterable, desc):
    return tqdm(iterable, desc=desc, leave=False, disable=None if ipython() is None else False)
