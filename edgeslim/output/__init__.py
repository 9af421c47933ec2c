"""Results of the techniques and the one writer of an out DIR.

    with staged(out, inputs=[...]) as (final, stage):
        report = write_result(stage, model, single_step(small, cfg, details), OutputOptions(command="prune"),
                              data=data, input_shape=(1, 28, 28), extra_details=details)
"""
from .options import OutputOptions
from .result import Compressed, export_artifact, layer_policy, single_step
from .stage import staged
from .writer import eval_split, write_result

__all__ = ["Compressed", "OutputOptions", "eval_split", "export_artifact", "layer_policy", "single_step", "staged",
           "write_result"]
