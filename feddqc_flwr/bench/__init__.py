"""`feddqc bench`: measured costs (time, memory, bytes), written to benchmarks/*.json."""
