#!/bin/bash
# Run lm-evaluation-harness on the tiny models: the harness's default layout, --output_path out/<stage>
set -e
cd /tmp/lmeval-work
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=/tmp/lmeval-work/hf_home
for stage in pretrain sft; do
  for m in tiny-a tiny-b tiny-c; do
    /tmp/lmeval-venv/bin/lm_eval --model hf --model_args pretrained=models/$stage/$m,dtype=float32 \
      --tasks tiny_letters,tiny_text,tiny_index,tiny_wino --include_path tasks --device cpu --batch_size 4 \
      --log_samples --output_path out/$stage --seed 0
  done
done
