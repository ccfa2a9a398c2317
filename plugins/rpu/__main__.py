import sys

from rpu.cli.main import main

sys.exit(main())
