// Training: the Trainer, checkpoints, metrics, progress output, logs and plots.
export { Trainer, TrainingDivergedError } from './trainer';
export { trainStep } from './step';
export { TrainStepRunner } from './graph';
export type { TrainStepResult, TrainStepOptions } from './graph';
export type { TrainerOptions, FitOptions, FitResult, StepInfo, EpochInfo } from './trainer';
export { MetricAccumulator, formatConfusion } from './metrics';
export type { EvalResult } from './metrics';
export {
  saveCheckpoint, loadCheckpoint, readCheckpointMeta, modelFromCheckpoint, modelSpec, packageVersion, CHECKPOINT_FORMAT,
} from './checkpoint';
export type { CheckpointMeta, LoadedCheckpoint, ModelSpec } from './checkpoint';
export { Progress, formatDuration } from './progress';
export { writeMetrics, renderPlot } from './logs';
export type { EpochRecord } from './logs';
