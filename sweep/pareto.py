"""Sweep: the pareto experiment (search_spaces/pareto.yaml). python sweep/pareto.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("pareto"))
