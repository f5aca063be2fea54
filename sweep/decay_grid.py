"""Sweep: the decay_grid experiment (search_spaces/decay_grid.yaml). python sweep/decay_grid.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("decay_grid"))
