import sys

from fireplug.cli import main

sys.exit(main())
