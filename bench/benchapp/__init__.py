"""The benchmark's Django app: one model."""
