"""`python -m pl_modules.commands ARGS` = `playmate ARGS` (e.g. under srun, without the console script)."""

import sys

from pl_modules.commands import main

sys.exit(main())
