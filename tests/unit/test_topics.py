"""Which topics shopcast needs, without a broker."""

from streams.settings import load_settings
from streams.topics import WINDOW_TABLE, changelog_topic, topic_specs


def test_every_topic_has_the_configured_partitions_and_replication():
    settings = load_settings(app_id="shop-a", partitions=12, replication_factor=3)
    specs = topic_specs(settings)
    names = [spec.name for spec in specs]
    assert {"shop.events", "shop.predictions", "shop.events.dlq", "shop.erasure",
            "shop.erasure.audit", "shop-a-windows-changelog"} <= set(names)
    assert len(names) == len(set(names))
    assert {(spec.partitions, spec.replication_factor) for spec in specs} == {(12, 3)}


def test_the_changelog_is_named_as_faust_names_it_and_compacted():
    settings = load_settings(app_id="shop-a")
    assert WINDOW_TABLE == "windows"
    assert changelog_topic(settings) == "shop-a-windows-changelog"
    changelog = next(s for s in topic_specs(settings) if s.name == changelog_topic(settings))
    assert changelog.config == {"cleanup.policy": "compact"}
    others = [s for s in topic_specs(settings) if s.name != changelog_topic(settings)]
    assert all("cleanup.policy" not in s.config for s in others)


def test_changelog_config_adds_to_compaction():
    settings = load_settings(app_id="shop-a")
    specs = topic_specs(settings, changelog_config={"segment.ms": "1000"})
    changelog = next(s for s in specs if s.name == changelog_topic(settings))
    assert changelog.config == {"cleanup.policy": "compact", "segment.ms": "1000"}
