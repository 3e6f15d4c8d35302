"""Smoke test for a freshly built wheel (cibuildwheel's test-command and the backend jobs).

    python packaging/smoke_test.py [--expect-backend cuda]

Imports pyllamacy, prints what loaded, checks that a CPU variant (never AMX) is in use, and with
--expect-backend that the backend package was found: loaded, or skipped for want of a driver or a
device (CI runners have no GPU). Exits non-zero otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect-backend")
    a = ap.parse_args(argv)
    import pyllamacy

    rep = pyllamacy.backend_report()
    print(json.dumps({"version": pyllamacy.__version__, "cpu_variant": pyllamacy.cpu_variant(),
                      "system_info": pyllamacy.system_info(), "report": rep}, indent=2))
    ok = bool(pyllamacy.cpu_variant()) and pyllamacy.cpu_variant() != "sapphirerapids"
    if a.expect_backend:
        pkgs = importlib.import_module("pyllamacy.backends").packages()
        mine = [p for p in pkgs if p["name"] == a.expect_backend]
        if not mine:
            print(f"FAIL: no installed package provides backend {a.expect_backend!r}")
            return 1
        st = mine[0].get("status")
        print(f"{a.expect_backend}: {st}: {mine[0].get('reason')}")
        ok = ok and (st == "loaded" or (st == "skipped" and "driver" in mine[0]["reason"])
                     or (st == "loaded" and mine[0].get("n_devices") == 0))
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
