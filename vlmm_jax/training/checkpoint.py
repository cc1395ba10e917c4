"""Orbax checkpoints of the train state and the data iterator: async, keep-last-k + best-k.

A checkpoint is only visible once complete (orbax writes to a temporary directory and renames),
so a run killed at any moment, a save included, resumes from the last complete step.
Restoring takes the target shardings, so a checkpoint restores onto a different mesh.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

from vlmm_jax.training.state import TrainState


class Checkpointer:
    """Saves and restores `(TrainState, data iterator state)` pairs under `directory`.

    Args:
      keep_last: how many of the most recent checkpoints to keep.
      best_metric / best_mode / keep_best: also keep the `keep_best` checkpoints with the best
        value of this metric (passed to `save` with the eval figures); "min" or "max".
    """

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 2,
        best_metric: str | None = None,
        best_mode: str = "min",
        keep_best: int = 1,
        async_save: bool = True,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"checkpoint.best_mode must be 'min' or 'max', got {best_mode!r}")
        policies = [ocp.checkpoint_managers.LatestN(n=keep_last)]
        if best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",  # BestN keeps the end of the sorted list
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.best_metric = best_metric
        self.manager = ocp.CheckpointManager(
            directory, options=options, item_names=("state", "data")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, data_state: dict, metrics: dict | None = None):
        """Starts an (async) save; `metrics` (host floats) rank checkpoints for keep-best."""
        if metrics is not None and self.best_metric and self.best_metric not in metrics:
            metrics = None
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
            metrics=metrics,
        )

    def restore(self, step: int, target_shardings: TrainState, abstract_state: TrainState):
        """Restores step `step` onto `target_shardings` (any mesh); returns (state, data)."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            target_shardings,
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["data"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
