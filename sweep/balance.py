"""Sweep: the balance experiment (search_spaces/balance.yaml). python sweep/balance.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("balance"))
