"""Sweep: the timestep experiment (search_spaces/timestep.yaml). python sweep/timestep.py --help"""

import sys

from sweep.cli import main

if __name__ == "__main__":
    sys.exit(main("timestep"))
