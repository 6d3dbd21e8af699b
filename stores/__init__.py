"""Owners of the physical stores' schemas: the versioned CQL files (``cql/``) and the code that applies
them. Everything else creates or migrates a Cassandra table through ``stores.cassandra_schema``."""
