"""Sweep: the timestep experiment (search_spaces/timestep.yaml). python sweep/timestep.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("timestep"))
