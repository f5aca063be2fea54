"""Sweep: the finetune experiment (search_spaces/finetune.yaml). python sweep/finetune.py --help"""

import sys

from app.sweep import main

if __name__ == "__main__":
    sys.exit(main("finetune"))
