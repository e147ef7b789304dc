"""Everything that turns files into batches: sources, splits, sampling, transforms, cache, datamodule."""

from bloodcls.data.datamodule import BloodCellDataModule
from bloodcls.data.sources import CsvSource, DataSource, FolderSource, MedMnistSource, SyntheticSource

__all__ = ["BloodCellDataModule", "CsvSource", "DataSource", "FolderSource", "MedMnistSource", "SyntheticSource"]
