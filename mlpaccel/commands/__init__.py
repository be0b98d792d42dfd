"""Subcommands of the mlpaccel CLI, one module each (configure(parser), run(args))."""
