import sys

from ..errors import EXIT_BAD_INPUT, UserError
from . import main

try:
    main()
except UserError as e:
    print(f"error: {e.line()}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
