"""Ray start-up."""
