"""Support code for main.py and train.py: data, checkpoints, flags, the fast
path, weight scaling and the report. The course's own files are at the top of
the repository; nothing here changes what they compute."""
