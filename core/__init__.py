"""Shared by both layers: settings, the profile schema, pure transformations and aggregate definitions."""
