"""Run every benchmark: python -m bench."""

from bench import sweep_utilisation, train_step

if __name__ == "__main__":
    train_step.main([])
    print()
    sweep_utilisation.main([])
