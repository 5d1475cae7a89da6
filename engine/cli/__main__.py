"""`python -m engine.cli`: what `bin/vigil` runs."""

from engine.cli.main import main

# Guarded: a worker process (anyio's, multiprocessing's) loads this module again under another name.
if __name__ == "__main__":
    main()
