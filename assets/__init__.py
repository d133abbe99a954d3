"""Dagster assets, checks, jobs, sensors and schedules: thin wrappers over crystal_pipeline."""
