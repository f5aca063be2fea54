"""Sweep: the finetune experiment (search_spaces/finetune.yaml). python sweep/finetune.py --help"""

import sys

from sweep.cli import main

if __name__ == "__main__":
    sys.exit(main("finetune"))
