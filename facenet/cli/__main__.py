"""`python -m facenet.cli …`: the same command as `facenet` and `python main.py`."""

from facenet.cli import main

if __name__ == "__main__":
    main()
