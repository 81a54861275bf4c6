import sys

from invdiff.cli import main

sys.exit(main())
