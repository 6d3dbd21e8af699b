"""The batch layer: the Delta Lake archive of the topic and the authoritative recomputation of the views."""
