"""Sweep: the pruning_ratio experiment (search_spaces/pruning_ratio.yaml). python sweep/pruning_ratio.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("pruning_ratio"))
