"""Lightning data modules for routed-transformer experiments.

Language modelling (batches ``{"input_ids", "targets"}``, targets -100 where unscored):
:class:`ByteTextDataModule`, :class:`PasskeyDataModule`.
Classification (batches ``{"inputs", "label"}`` plus ``"mask"`` for padded tokens):
:class:`ListOpsDataModule`, :class:`PathfinderDataModule`, :class:`MatchingMarksDataModule`,
:class:`MarkColourDataModule` (read out at the top-left pixel),
:class:`FeatureMapDataModule`,
:class:`PasskeyReadoutDataModule` (a label per readout position).
"""
from .byte_text import ByteTextDataModule
from .feature_maps import FeatureMapDataModule
from .listops import ListOpsDataModule
from .mark_colour import MarkColourDataModule
from .matching_marks import MatchingMarksDataModule
from .passkey import PasskeyDataModule, PasskeyReadoutDataModule
from .pathfinder import PathfinderDataModule

__all__ = [
    "ByteTextDataModule",
    "FeatureMapDataModule",
    "ListOpsDataModule",
    "MarkColourDataModule",
    "MatchingMarksDataModule",
    "PasskeyDataModule",
    "PasskeyReadoutDataModule",
    "PathfinderDataModule",
]
