import sys

from rpu.cli import main

sys.exit(main())
