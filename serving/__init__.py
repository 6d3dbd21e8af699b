"""Serving: the merged batch + speed query layer and the Panel dashboard."""
