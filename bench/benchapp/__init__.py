"""The benchmark's Django app: two models, two views."""
