"""Import every module of the generated client (argv[1] holds `palisade_client`).

openapi-python-client can emit code that does not import (e.g. a name missing from an
import) without printing a warning: this catches it before the tour does.
"""

import importlib
import pkgutil
import sys

sys.path.insert(0, sys.argv[1])
import palisade_client  # noqa: E402

modules = bad = 0
for info in pkgutil.walk_packages(palisade_client.__path__, "palisade_client."):
    modules += 1
    try:
        importlib.import_module(info.name)
    except Exception as exc:  # noqa: BLE001 - report every broken module
        bad += 1
        print(f"    cannot import {info.name}: {type(exc).__name__}: {exc}")
print(f"    imported {modules - bad} of {modules} generated modules")
sys.exit(1 if bad else 0)
