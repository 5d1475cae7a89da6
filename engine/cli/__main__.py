"""`python -m engine.cli`: what `bin/vigil` runs."""

from engine.cli.main import main

main()
