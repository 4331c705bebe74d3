"""DAGN's three training stages as Ray Train runs, from a local folder or S3, checkpointed to a folder or S3.

Layout of the output location ``OUT`` (a local path or ``s3://bucket/prefix``)::

    OUT/train_config.json           the TrainConfig of the latest invocation
    OUT/checkpoints/<name>-stage1/  Ray Train run of stage 1 (checkpoint_*/state.pt + model.safetensors)
    OUT/stage1.safetensors          stage 1 finished: the DAGN after it, the seed of stage 2 (likewise 2 and 3)
    OUT/model.safetensors           the exported inference weights (after stage 3), with provenance metadata

Each stage is its own Ray Train run (``TorchTrainer``, DDP over gloo on CPU or NCCL on GPU) named
``<name>-stage<N>``; re-running the same command resumes it from its latest checkpoint (Ray Train restores the run
by name) and a stage whose ``stageN.safetensors`` exists is not run again. ``steps`` caps how many steps one
invocation does per stage, so a long stage can be trained in pieces; the learning-rate schedule always spans the
stage's planned ``stageN_steps``.

The modules, in the order a job meets them: :mod:`.config` (what the job is told), :mod:`.data` (images to patches
on Ray Data), :mod:`.plan` (workers and data actors on the cluster), :mod:`.driver` (one Ray Train run per stage),
:mod:`.worker` (the loop of each Ray Train worker, with :mod:`.meter` and :mod:`.validation`), :mod:`.artifacts`
(the model files in OUT), :mod:`.seed` (``init_from``) and :mod:`.export` (the inference weights).
"""

from pipeline.train.config import StageResult, TrainConfig
from pipeline.train.driver import run_stage, train
from pipeline.train.export import export_model
from pipeline.train.plan import WorkerPlan, plan_workers

__all__ = ["StageResult", "TrainConfig", "WorkerPlan", "export_model", "plan_workers", "run_stage", "train"]
