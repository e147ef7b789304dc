"""Tests of the slurm/ entry points against a private single-node Slurm cluster."""
