"""What main.py and train.py use; the course's own files are at the top of the repository."""
