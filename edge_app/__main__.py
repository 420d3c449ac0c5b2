"""`python -m edge_app serve ...` (see edge_app.serve)."""

import sys

from .serve import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("usage: python -m edge_app serve [--bundle DIR ...] [--config FILE] "
              "[--host H] [--port P]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[2:]))
