import sys

from dancewire.cli import main

sys.exit(main())
