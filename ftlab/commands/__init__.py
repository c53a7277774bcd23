"""One module per `ftlab` subcommand (discovered automatically by `ftlab.cli`)."""
