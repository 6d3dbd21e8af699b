"""Orchestration: Dagster assets, schedules, sensors and checks for the batch layer."""
