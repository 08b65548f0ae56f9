"""The model zoo, shared by every LM study (layer 3, below the studies).

- :mod:`~transferlab.zoo.sizes`: the family of sizes;
- :mod:`~transferlab.zoo.model`: the Llama decoder the zoo trains (saved as ``LlamaForCausalLM``);
- :mod:`~transferlab.zoo.store`: a zoo folder: corpora, tokenizer and token caches, models, manifest;
- :mod:`~transferlab.zoo.settings`: :class:`TrainSettings`, the training sub-config studies embed;
- :mod:`~transferlab.zoo.train`: :func:`pretrain` and :func:`finetune` (reuse when done, resume when
  interrupted), bf16 and devices, memory checks;
- :mod:`~transferlab.zoo.build`: ``transferlab zoo build`` (:class:`ZooConfig`, presets, :func:`build_zoo`);
- :mod:`~transferlab.zoo.analysis` and :mod:`~transferlab.zoo.report`: L(N) across the family, the page.
"""

from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import DEFAULT_SIZES, FAMILY, SizeSpec, parse_sizes, size_spec
from transferlab.zoo.store import TokenData, Zoo, corpus_key

__all__ = ["DEFAULT_SIZES", "FAMILY", "SizeSpec", "TokenData", "TrainSettings", "Zoo", "corpus_key",
           "parse_sizes", "size_spec"]
