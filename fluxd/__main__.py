import sys

from fluxd.cli import main

sys.exit(main())
