"""FedDQC on Flower: the apps, the `feddqc` CLI and the library they share.

Every entry point (CLI, ServerApp, ClientApp) imports this package first: the place to drop the
notices that libraries print while they import, before anything imports them (`app.quiet`)."""

from feddqc_flwr.app.quiet import quiet_import_noise

quiet_import_noise()
