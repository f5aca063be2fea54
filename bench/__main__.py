"""Run every benchmark: python -m bench [--data-dir CIFAR10_DIR] [--quick].

--quick shrinks every benchmark to a smoke test (seconds per part; the figures mean nothing).
"""

import argparse

from bench import decay_search, pareto_search, sweep_budget, train_step, worker_reuse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 directory for the training-step benchmark "
                                                         "(default: bundled digits at 32x32)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs")
    args = parser.parse_args(argv)
    data_args = ["--data-dir", args.data_dir] if args.data_dir else []
    step_args = list(data_args)
    if args.quick:
        step_args += ["--batches", "1", "--rounds", "1", "--batch-size", "8", "--matmul-n", "128"]
    train_step.main(step_args)
    print()
    decay_search.main(["--searches", "2"] if args.quick else [])
    print()
    pareto_search.main(["--searches", "2", "--trials", "8"] if args.quick else [])
    print()
    sweep_budget.main(["--set", "base.epochs=2", "--set", "searched.decay.values=[0.3,0.5,0.7]"]
                      if args.quick else [])
    print()
    worker_reuse.main(data_args + (["--epochs", "2", "--subset", "100"] if args.quick else []))


if __name__ == "__main__":
    main()
