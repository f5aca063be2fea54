"""Run every benchmark: python -m bench [--quick]."""

import sys

from bench import train_step

if __name__ == "__main__":
    train_step.main(sys.argv[1:])
