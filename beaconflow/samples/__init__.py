"""Sample game logs: the event generator and the command that writes sample_data/."""
