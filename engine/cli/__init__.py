"""The `vigil` command: `engine.cli.main` assembles the groups, one module per group of commands."""
