"""Two stages x three tiny random GPT-2 models, saved with save_pretrained (no hub)."""
import sys
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

out = Path(sys.argv[1])
text = [
    "Question: what do birds use to fly? Answer: wings.",
    "The cat sat on the mat because it was warm.",
    "A river flows to the sea. Water is wet. Fire is hot.",
    "Choose the best answer among A, B and C.",
    "Sand is dry. Roots grow in the ground. A car has wheels. The sun is warm.",
] * 50
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                              unk_token="<|endoftext|>", pad_token="<|endoftext|>")
for i, (layers, width) in enumerate([(1, 16), (2, 24), (2, 32)]):
    name = f"tiny-{'abc'[i]}"
    torch.manual_seed(i)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=width, n_layer=layers, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    model.save_pretrained(out / "pretrain" / name)
    tok.save_pretrained(out / "pretrain" / name)
    # "sft": a few steps of plain next-token training on the text above, so the stage differs
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = tok(text[:8], return_tensors="pt", padding=True)
    for _ in range(10 * (i + 1)):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out / "sft" / name)
    tok.save_pretrained(out / "sft" / name)
    print(name, sum(p.numel() for p in model.parameters()), "params")
