"""Sweep: the patch_ratio experiment (search_spaces/patch_ratio.yaml). python sweep/patch_ratio.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("patch_ratio"))
