"""T1 Lab command line: `python -m lab <command>`."""
