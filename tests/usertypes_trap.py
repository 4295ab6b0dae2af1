"""A module decoding must never import: importing it leaves a marker file."""

import dataclasses
import os
import pathlib

pathlib.Path(os.environ["FLOWDAG_TRAP_MARKER"]).write_text("imported")


@dataclasses.dataclass
class Trap:
    x: int = 0
