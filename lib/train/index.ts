// Training: the Trainer, checkpoints, metrics, progress output, logs and plots.
export { Trainer, TrainingDivergedError } from './trainer';
export { trainStep, runStep, eagerGate, TrainStepRunner } from './train_step';
export type { TrainStepResult, TrainStepOptions, StepOutput, LossGate } from './train_step';
export type { TrainerOptions, FitOptions, FitResult, StepInfo, EpochInfo, AbortSignalLike } from './trainer';
export { Dashboard, DEFAULT_DASHBOARD_PORT } from './dashboard';
export type { DashboardOptions, DashboardRun, DashboardStep, DashboardStatus } from './dashboard';
export { MetricAccumulator, formatConfusion } from './metrics';
export type { EvalResult } from './metrics';
export {
  saveCheckpoint, loadCheckpoint, readCheckpointMeta, modelFromCheckpoint, modelSpec, packageVersion, CHECKPOINT_FORMAT,
} from './checkpoint';
export type { CheckpointMeta, LoadedCheckpoint, ModelSpec } from './checkpoint';
export { Progress, formatDuration } from './progress';
export { writeMetrics, renderPlot } from './logs';
export type { EpochRecord } from './logs';
