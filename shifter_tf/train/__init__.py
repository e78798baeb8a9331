"""Sparse portfolio training, phase 2: one training run (`engine`), magnitude masks and the
global allocation (`magnitude`), tfmot wrappers (`wrappers`), the structure step (`structure`),
IMP with rewinding (`lottery`) and fine-tuning (`finetune`).
May import: config, distributed, data, models, graph, errors, util. Never surgery or export."""
