import sys

from sockguard.cli import main

sys.exit(main())
