"""The progress bar of step-based runs ("Epoch 0/-2" becomes "Epoch 0 · to step 600") and a model
summary without the FLOPs that Lightning cannot count here."""
from __future__ import annotations

from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class StepsProgressBar(RichProgressBar):
    """RichProgressBar whose training description names the step limit when max_epochs does not
    bound the run (Lightning sets it to -1 when max_steps does)."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}" + (f" · to step {trainer.max_steps}" if trainer.max_steps > 0 else "")
        return f"{description:{len(self.validation_description)}}"


class ParamsModelSummary(RichModelSummary):
    """RichModelSummary without the FLOPs column and "Total FLOPs: 0" line: Lightning counts FLOPs
    only for modules with an example_input_array, which none here has, so they always read 0."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict, total_flops: int, **summarize_kwargs) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        for name, _ in columns[1:]:
            table.add_column(name, justify="left" if name in ("Name", "Type", "Mode") else "right")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        lines = [("Trainable params", get_human_readable_count(int(trainable_parameters))),
                 ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
                 ("Total params", get_human_readable_count(int(total_parameters))),
                 ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
                 ("Modules in train / eval mode",
                  f"{total_training_modes['train']} / {total_training_modes['eval']}")]
        if total_flops:
            lines.append(("Total FLOPs", get_human_readable_count(total_flops)))
        for label, value in lines:
            console.print(f"[bold]{label}[/]: {value}")
