"""`python -m edge_app serve ...` (see edge_app.serve), `python -m edge_app bench ...` (see
edge_app.benchmark) and `python -m edge_app summary ...` (see edge_app.summary)."""

import sys

USAGE = ("usage: python -m edge_app serve [--bundle DIR ...] [--config FILE] [--host H] "
         "[--port P]\n       python -m edge_app bench --bundle DIR [...] [--out DIR] "
         "[--device NAME] [--repeats 3] [--window 60]\n"
         "       python -m edge_app summary --bundle DIR [...] [--out DIR]")

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve":
        from .serve import main
    elif command == "bench":
        from .benchmark import main
    elif command == "summary":
        from .summary import main
    else:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[2:]))
