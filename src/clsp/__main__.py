import sys

from clsp.cli import main

sys.exit(main())
