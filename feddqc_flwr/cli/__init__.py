"""Command-line tools: one module per `feddqc` command."""
