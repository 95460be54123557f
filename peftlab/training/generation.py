"""Greedy answers for prompt -> response pairs, and their exact match with the reference responses.

Prompts are laid out as in training (data.datamodule.prompt_text), left-padded into batches (decoders continue from
the right end), and decoded greedily with the KV cache by transformers' generate. Each answer gets at most as many
tokens as its reference answer plus one (room for the end-of-sequence token): a longer answer cannot match anyway.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from peftlab.data.datamodule import prompt_text


def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed text: exact match ignores only those differences."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of predictions equal to their reference after normalize()."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need equally many predictions and references, got {len(predictions)} and {len(references)}")
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / len(references)


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask with every row right-aligned."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer: Any, prompts: list[str], references: list[str],
                   batch_size: int = 16) -> list[str]:
    """The model's greedy answer to each prompt (text after the prompt, up to the end-of-sequence token)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [prompt_text(p) for p in prompts[start:start + batch_size]]
            rows = tokenizer(chunk, add_special_tokens=False)["input_ids"]
            refs = tokenizer([" " + r for r in references[start:start + batch_size]], add_special_tokens=False)["input_ids"]
            new_tokens = max(len(r) for r in refs) + 1
            ids, mask = left_pad(rows, pad_id, device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=pad_id, eos_token_id=eos)
            for row, ref in zip(out[:, ids.shape[1]:].tolist(), refs):
                row = row[:len(ref) + 1]  # the same budget whatever else shares the batch
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                answers.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers
