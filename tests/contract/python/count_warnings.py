"""Count openapi-python-client's warnings in its output (argv[1]).

Prints each warning's headline to stderr and the count to stdout. A warning is a block
that starts with `WARNING ...` (an endpoint or response skipped), `Unable to process
schema ...` (a model dropped), `Skipping ...` or `ERROR ...`.
"""

import re
import sys

HEAD = re.compile(r"^(WARNING\b|Unable to process schema\b|Skipping\b|ERROR\b|Error\b)")
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
lines = text.splitlines()
found = []
for i, line in enumerate(lines):
    if HEAD.match(line) and not line.startswith("Error(s) encountered"):
        # The headline plus the block's first non-empty detail line.
        detail = next((l.strip() for l in lines[i + 1 : i + 4] if l.strip()), "")
        found.append(f"{line.strip()} | {detail}")
for n, item in enumerate(found, 1):
    print(f"    warning {n}: {item}", file=sys.stderr)
print(len(found))
