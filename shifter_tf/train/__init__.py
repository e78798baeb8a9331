"""Sparse portfolio training, phase 2: one training run (`engine`), magnitude masks and the
global allocation (`magnitude`), tfmot wrappers (`wrappers`), the filter and group structure
steps (`structure`, `groups`), holding masks inside the train step (`steps`), one compiled model
reused across levels (`trainer`), IMP with rewinding (`lottery`), resume checks (`resume`), the
dense level's sanity check (`sanity`) and fine-tuning (`finetune`).
May import: config, distributed, data, models, graph, errors, util. Never surgery or export."""
