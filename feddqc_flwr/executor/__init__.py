"""Resident ClientApp executor: one long-lived process per SuperNode instead of `flower-superexec`.

Flower 1.41/1.42 start a fresh `flwr-clientapp` process for every message, so each message
re-imports torch and reloads the base model. This executor claims the node's ClientApp tasks
from the SuperNode's Runtime API and runs them in its own process with Flower's task functions,
so the app's cached model survives every message and run. It uses Flower internals: `versions`
names the flwr releases it supports and refuses the others.
"""
