"""The speed layer: Spark Structured Streaming from Kafka to MongoDB raw documents and Cassandra views."""
