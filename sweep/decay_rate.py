"""Sweep: the decay_rate experiment (search_spaces/decay_rate.yaml). python sweep/decay_rate.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("decay_rate"))
