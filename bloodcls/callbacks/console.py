"""The progress bar and model summary of a bloodcls run, without Lightning's ``v_num`` and ``Total FLOPs: 0``."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_human_readable_count


class CompactProgressBar(RichProgressBar):
    """RichProgressBar without ``v_num`` (the run folder's version, shown as ``v_num: 0.000``)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class CompactModelSummary(RichModelSummary):
    """RichModelSummary with the FLOPs column and total only when Lightning could count them (else all 0)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from rich import get_console
        from rich.table import Table

        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        for name, _ in columns:  # the first one is the row index, named " "
            table.add_column(
                name, justify="right" if name.startswith("Params") else "left", style="dim" * (name == " ")
            )
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*map(str, row))
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"[bold]Trainable params[/]: {get_human_readable_count(trainable_parameters)}   "
            f"[bold]Non-trainable params[/]: {get_human_readable_count(frozen)}   "
            f"[bold]Size[/]: {model_size:.1f} MB"
        )
