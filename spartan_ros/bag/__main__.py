"""``python -m spartan_ros.bag ...`` is ``spartan-bag ...``."""

import sys

from spartan_ros.bag.cli import main

sys.exit(main())
