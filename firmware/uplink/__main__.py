"""``python -m firmware.uplink --data DIR``: the uplink, until the command line has ``kiroku uplink``."""

import sys

from firmware.uplink import main

sys.exit(main())
