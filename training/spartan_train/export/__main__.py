"""``python -m spartan_train.export CHECKPOINT OUT_DIR ...`` (same as ``spartan-export``)."""

import sys

from .onnx_export import main

sys.exit(main())
