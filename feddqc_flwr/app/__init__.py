"""The Flower app: ClientApp, ServerApp, strategies, the run config and where results land."""
