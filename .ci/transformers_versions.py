"""Print the transformers versions CI tests: `oldest`, `newest_in_range` or `newest`.

The supported range is read from pyproject.toml (its one home); the releases from the
package index through `pip index versions`. `oldest` is the range's lower bound, which must
name a release exactly (`>=X.Y.Z`), so CI tests what users may get at the low end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def supported() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == "transformers":
            return requirement
    raise SystemExit("pyproject.toml declares no transformers dependency")


def releases() -> list[Version]:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "transformers"],
                         capture_output=True, text=True, check=True).stdout
    listed = re.search(r"Available versions:(.*)", out)
    if listed is None:
        raise SystemExit(f"could not read transformers releases from pip:\n{out}")
    found = [Version(v.strip()) for v in listed.group(1).split(",") if v.strip()]
    return sorted(v for v in found if not v.is_prerelease)


def main(which: str) -> str:
    spec = supported().specifier
    floors = [s.version for s in spec if s.operator == ">="]
    if len(floors) != 1:
        raise SystemExit(f"transformers{spec}: state one lower bound (>=X.Y.Z)")
    if which == "oldest":
        return floors[0]
    available = releases()
    if which == "newest":
        return str(available[-1])
    if which == "newest_in_range":
        return str(max(v for v in available if v in spec))
    raise SystemExit(f"unknown {which!r}: use oldest, newest_in_range or newest")


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else ""))
