"""``python -m spartan_ros.export CHECKPOINT OUT_DIR ...`` (same as ``spartan-export``)."""

import sys

from .onnx_export import main

sys.exit(main())
