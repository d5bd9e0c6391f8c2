"""One home per system: `frugal.scripts.systems.<name>` holds its config presets, experiment, command
and README. The command line and the tour discover them (`frugal.scripts.cli`)."""
