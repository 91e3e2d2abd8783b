"""The package's Fast DDS transport profile for camera-sized messages (``fastdds.xml`` here).

Fast DDS passes a message between two processes of one computer through a shared-memory segment
of the publishing process, 512 KB by default. An image larger than that (every rgb8 camera from
640x480 up) mostly does not fit: with best effort it is lost, reliable it is resent. The profile
gives the segment room for several 1080p images. It must be in force in the *publisher's*
process (the camera driver, ``spartan-bag play``) before its first ROS node is created, which
only an environment variable can do: :func:`profile_env` gives it, and leaves a user's own
Fast DDS set-up alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROFILE = Path(__file__).with_name("fastdds.xml")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# Any of these set means the user configures Fast DDS themselves (an empty value included:
# FASTDDS_DEFAULT_PROFILES_FILE= is the way to say "no profile, Fast DDS's defaults").
USER_SETTINGS = (PROFILE_VARIABLE, "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
# Fast DDS also loads this file from the working directory on its own.
WORKING_DIR_PROFILE = "DEFAULT_FASTDDS_PROFILES.xml"


def profile_env(environ: Mapping[str, str] | None = None, cwd: Path | None = None
                ) -> dict[str, str]:
    """``{FASTDDS_DEFAULT_PROFILES_FILE: <this package's profile>}`` to add to a process's
    environment, or ``{}`` when the middleware is not Fast DDS or the user has their own
    Fast DDS configuration (a profile variable, builtin transports, or a profile file in the
    working directory)."""
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return {}
    if any(name in env for name in USER_SETTINGS):
        return {}
    if ((cwd or Path.cwd()) / WORKING_DIR_PROFILE).exists():
        return {}
    return {PROFILE_VARIABLE: str(PROFILE)}
