"""Read the project's requirements out of pyproject.toml for the Docker build.

    python3 deploy/requirements.py pyproject.toml [--extra cpu] > requirements.txt
    python3 deploy/requirements.py pyproject.toml --verify-installed gpu

The first form prints the base dependencies plus those of the named extras, one a line, so the
image installs its heavy dependencies in a layer that changes only with pyproject.toml. The
second checks that every ``name==version`` pin of an extra is what the image already has (the
GPU image must bring exactly the vLLM of the ``gpu`` extra); it exits 1 with a message if not.
Standard library only (Python >= 3.11 for tomllib).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*$")


def load_project(path: str | Path) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)["project"]


def requirements(project: dict, extras: list[str]) -> list[str]:
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += [r for r in optional[extra] if r not in lines]
    return lines


def pins(project: dict, extra: str) -> dict[str, str]:
    """``name==version`` requirements of one extra, as {normalized name: version}."""
    found = {}
    for line in requirements(project, [extra])[len(project.get("dependencies", [])):]:
        match = _PIN.match(line)
        if match:
            found[_normalize(match.group(1))] = match.group(2)
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def verify_installed(project: dict, extra: str) -> list[str]:
    """Problems (empty when every pin of the extra is installed at its version)."""
    problems = []
    for name, wanted in pins(project, extra).items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={wanted} is pinned by the '{extra}' extra "
                            "but not installed in the base image")
            continue
        if have.split("+")[0] != wanted.split("+")[0]:
            problems.append(f"the base image has {name} {have}, but the '{extra}' extra pins "
                            f"{wanted}: build with a matching base image tag")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject", help="path to pyproject.toml")
    parser.add_argument("--extra", action="append", default=[], help="extra to include")
    parser.add_argument("--verify-installed", metavar="EXTRA",
                        help="check that the pins of EXTRA are installed; print nothing else")
    args = parser.parse_args(argv)
    project = load_project(args.pyproject)
    if args.verify_installed:
        problems = verify_installed(project, args.verify_installed)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    print("\n".join(requirements(project, args.extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
