"""The package's Fast DDS profile (spartan_ros/dds): when it is applied, and that it is one."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from spartan_ros import dds

NS = {"dds": "http://www.eprosima.com"}
IMAGE_1080P_RGB8 = 1920 * 1080 * 3


def test_profile_applies_on_fast_dds_without_a_users_setup(tmp_path: Path) -> None:
    want = {"FASTDDS_DEFAULT_PROFILES_FILE": str(dds.PROFILE)}
    assert dds.profile_env({}, cwd=tmp_path) == want
    assert dds.profile_env({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, cwd=tmp_path) == want
    assert dds.profile_env({"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"},
                           cwd=tmp_path) == want


@pytest.mark.parametrize("environ", [
    {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
    {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_fastdds.xml"},
    {"FASTDDS_DEFAULT_PROFILES_FILE": ""},  # "Fast DDS's defaults, please"
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/old_name.xml"},
    {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
])
def test_a_users_own_setup_or_another_middleware_is_left_alone(environ: dict[str, str],
                                                                tmp_path: Path) -> None:
    assert dds.profile_env(environ, cwd=tmp_path) == {}


def test_a_profile_in_the_working_directory_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").write_text("<dds/>")
    assert dds.profile_env({}, cwd=tmp_path) == {}


def test_profile_is_a_default_participant_with_room_for_1080p_images() -> None:
    root = ET.parse(dds.PROFILE).getroot()
    [participant] = root.findall("dds:profiles/dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.findall("dds:rtps/dds:userTransports/dds:transport_id", NS)]
    transports = {t.findtext("dds:transport_id", namespaces=NS): t
                  for t in root.findall("dds:profiles/dds:transport_descriptors/"
                                        "dds:transport_descriptor", NS)}
    assert set(used) == set(transports)
    kinds = {t.findtext("dds:type", namespaces=NS) for t in transports.values()}
    assert kinds == {"SHM", "UDPv4"}  # UDP kept: discovery, and other computers
    [shm] = [t for t in transports.values() if t.findtext("dds:type", namespaces=NS) == "SHM"]
    assert int(shm.findtext("dds:segment_size", namespaces=NS) or 0) >= 8 * IMAGE_1080P_RGB8
    assert participant.findtext("dds:rtps/dds:useBuiltinTransports", namespaces=NS) == "false"


def test_service_answers_wait_longer_for_a_new_client_but_not_long() -> None:
    """rmw_fastrtps takes the data_writer profile "service" for every service's answers."""
    root = ET.parse(dds.PROFILE).getroot()
    [service] = [w for w in root.findall("dds:profiles/dds:data_writer", NS)
                 if w.get("profile_name") == "service"]
    wait = service.find("dds:qos/dds:reliability/dds:max_blocking_time", NS)
    seconds = int(wait.findtext("dds:sec", namespaces=NS)) + \
        int(wait.findtext("dds:nanosec", namespaces=NS)) * 1e-9
    assert 0.1 < seconds <= 0.5  # Fast DDS's own is 0.1 s; the wait holds the node's GIL
    beat = service.find("dds:times/dds:heartbeat_period", NS)
    assert int(beat.findtext("dds:sec", namespaces=NS)) == 0  # as fast as the other writers
