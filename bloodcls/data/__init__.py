"""Everything that turns files into batches: sources, splits, sampling, transforms, cache, datamodule."""

from bloodcls.data.datamodule import BloodCellDataModule

__all__ = ["BloodCellDataModule"]
