"""The golden set's run config, shared by the golden_set asset and every promotion run (they must name one set)."""

import dagster as dg

from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.golden import GoldenSpec, GoldenSplits, write_golden

_DEFAULT = GoldenSpec()


class GoldenSetConfig(dg.Config):
    """The frozen evaluation set (``lib.golden``), from scene streams training never draws from."""

    seed: int = _DEFAULT.seed
    scenes: int = _DEFAULT.scenes
    width: int = _DEFAULT.width
    height: int = _DEFAULT.height
    plates: int = _DEFAULT.plates
    shift_plates: int = _DEFAULT.shift_plates

    def spec(self) -> GoldenSpec:
        return GoldenSpec(seed=self.seed, scenes=self.scenes, width=self.width, height=self.height,
                          plates=self.plates, shift_plates=self.shift_plates)

    def splits(self, state: AlprStateResource) -> dict[str, GoldenSplits]:
        """Each model's golden splits under ``state``, generated if absent (they are deterministic)."""
        return write_golden(state.path("datasets", "golden"), self.spec())
