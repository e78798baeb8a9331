"""Multi-worker training made safe to operate: the cluster (`cluster`) and prompt stopping
(`sentinel`). Used by the training phase. May import: config, errors, util."""
