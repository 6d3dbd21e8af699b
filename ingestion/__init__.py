"""The producer: fetches profiles from randomuser.me (or a synthetic source) and publishes them to Kafka."""
