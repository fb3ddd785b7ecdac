"""The one path every image takes: file -> decode -> attack -> atomic save -> verify the saved file -> manifest.

The CLI, the web service, experiments and benchmarks all call :func:`protect_paths` (or :class:`Protector`
for in-memory use); none has its own attack loop, image loading or verification.
"""

from onlymine.protect.build import build_attack, load_surrogates, retry_changes
from onlymine.protect.loop import Protector
from onlymine.protect.manifest import CONFIG, MANIFEST, Outcome, Summary
from onlymine.protect.paths import decode_ahead, output_paths, protect_paths
from onlymine.protect.targets import Batch, Target, WholeImage
from onlymine.runtime import pick_device

__all__ = ["CONFIG", "MANIFEST", "Batch", "Outcome", "Protector", "Summary", "Target", "WholeImage", "build_attack",
           "decode_ahead", "load_surrogates", "output_paths", "pick_device", "protect_paths", "retry_changes"]
