"""What to run, checked before anything loads: settings resolved once, the plan of runs,
the checks and the dry run."""
