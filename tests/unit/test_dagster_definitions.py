"""Wiring: the Dagster definitions load, the job resolves, the graph is archive -> silver -> views."""

from __future__ import annotations

from dagster import AssetKey

from orchestration.definitions import UserPulseResource, defs


def test_definitions_load_and_the_job_resolves() -> None:
    job = defs.resolve_job_def("batch_layer")
    graph = defs.resolve_asset_graph()

    assert job.name == "batch_layer"
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "profile_archive",
        "silver_profiles",
        "batch_views",
    }
    assert graph.get(AssetKey("silver_profiles")).parent_keys == {AssetKey("profile_archive")}
    assert graph.get(AssetKey("batch_views")).parent_keys == {AssetKey("silver_profiles")}
    assert defs.resolve_schedule_def("batch_layer_schedule").cron_schedule == "*/15 * * * *"
    assert defs.resolve_sensor_def("new_offsets_waiting").job_name == "batch_layer"


def test_resource_overrides_replace_single_settings() -> None:
    settings = UserPulseResource(
        overrides={"kafka.profiles_topic": "t1", "cassandra.keyspace": "ks1"}
    ).settings()

    assert (settings.kafka.profiles_topic, settings.cassandra.keyspace) == ("t1", "ks1")
    assert settings.kafka.port == 9092  # everything else as configured
