"""`python -m feddqc_flwr.executor`: the same as `feddqc-executor`."""

from feddqc_flwr.executor.cli import main

main()
