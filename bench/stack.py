"""Build and start-up figures of the Docker stack (README: Results).

    python bench/stack.py            # cold build, warm builds, stack up to healthy
    python bench/stack.py --no-cold  # keep the images and build caches (warm figures only)

Cold means nothing cached: the stack's images, the local Debian base and the BuildKit cache
(uv's downloads included) are removed first, so the figure includes debootstrap and every
download from PyPI and Debian. Warm is a rebuild with nothing changed, and a rebuild after a
change to the project's code (the dependency layers are reused). Needs root (it starts dockerd
when none runs) and removes only fraudloop's images and the builder cache.
The delivery time through the stack, with the share spent launching run containers, is printed
by the system test (tests/test_stack.py) and `make test-stack`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack_harness import DOCKER, Stack, image_exists  # noqa: E402

IMAGES = [*Stack.images(), "fraudloop/debian:bookworm"]


def sh(*args: str) -> None:
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)


def timed_build() -> float:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "infra/docker/build.sh"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)
    print("    " + done.stdout.strip().replace("\n", "\n    "))
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cold", action="store_true", help="skip the cold build")
    args = parser.parse_args()
    sh("bash", "infra/docker/ensure-dockerd.sh")
    rows = []
    if not args.no_cold:
        for image in IMAGES:
            if image_exists(image):
                sh(DOCKER, "image", "rm", "-f", image)
        sh(DOCKER, "builder", "prune", "-af")
        print("cold build (no image, no base, no build cache):")
        rows.append(("cold build (base image + 5 images)", timed_build()))
    print("warm build (nothing changed):")
    rows.append(("warm build, nothing changed", timed_build()))
    marker = ROOT / "fraudloop" / "__init__.py"
    original = marker.read_bytes()
    try:
        marker.write_bytes(original + b"\n# bench/stack.py: a code change\n")
        print("warm build after a code change:")
        rows.append(("warm build after a code change", timed_build()))
    finally:
        marker.write_bytes(original)
    timed_build()  # back to the committed code
    stack = Stack.create({}, project="fraudloop-bench")
    try:
        rows.append(("stack up to healthy (7 services)", stack.up()))
    finally:
        stack.down()
    print("\n| figure | seconds |\n| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.0f} |")
    for image in Stack.images():
        size = subprocess.run(
            [DOCKER, "image", "inspect", "-f", "{{.Size}}", image],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        print(f"{image}: {int(size) / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
