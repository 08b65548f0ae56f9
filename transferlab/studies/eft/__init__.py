"""The EFT study: the zoo demo's 2x2 of pretraining scale x fine-tuning scale (``transferlab eft demo``).

The decoding library it uses (mixing, speculative decoding, scoring, the ``EFT`` API) is ``transferlab.eft``.
"""
