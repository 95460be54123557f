"""One LightningDataModule for both tasks: sequence classification and causal language modelling.

Examples are tokenised once; batches are padded to their longest row. The split into train/validation/test is a
seeded shuffle, so every method in a comparison sees the same examples, and the training order of each epoch is
seeded by (seed, epoch) so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from peftlab.data import sources
from peftlab.errors import ConfigError, check_choice, check_int

PACKAGED = {"rotten_tomatoes": "classification", "shakespeare": "causal_lm", "chatterbot": "causal_lm"}
IGNORE_INDEX = -100


@dataclass
class DataConfig:
    """source: rotten_tomatoes | shakespeare | chatterbot | a CSV/JSONL path | hf:<name>.
    For causal_lm, format `text` trains on every token of text_column (or the packaged plays); `pairs` trains on
    response_column given prompt_column (loss on the response only)."""

    name: str
    task: str = "classification"
    source: str = "rotten_tomatoes"
    format: str = "text"
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str = "prompt"
    response_column: str = "response"
    max_length: int = 64
    train_size: int = 2000
    val_size: int = 500
    test_size: int = 1000
    batch_size: int = 32
    eval_batch_size: int = 64
    split_seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_choice("data.task", self.task, ("classification", "causal_lm"))
        check_choice("data.format", self.format, ("text", "pairs"))
        if self.source in PACKAGED and PACKAGED[self.source] != self.task:
            raise ConfigError("data.task", self.task, f"{PACKAGED[self.source]} for source {self.source}")
        for key in ("max_length", "train_size", "val_size", "test_size", "batch_size", "eval_batch_size"):
            check_int(f"data.{key}", getattr(self, key))
        check_int("data.num_workers", self.num_workers, minimum=0)


class Encoded(Dataset):
    """Tokenised examples: a list of dicts of Python int lists."""

    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


class EpochSeededSampler(Sampler[int]):
    """A random order fixed by (seed, epoch); Lightning calls set_epoch, so resuming replays the same order."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.start = start  # examples of this epoch already trained on (a run resumed mid-epoch); used once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        start, self.start = self.start, 0
        return iter(torch.randperm(self.n, generator=g).tolist()[start:])

    def __len__(self) -> int:
        return self.n


def pad_batch(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad input_ids (pad_id), attention_mask (0) and token labels (-100) to the longest row."""
    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
        if key not in rows[0]:
            continue
        if isinstance(rows[0][key], int):
            batch[key] = torch.tensor([r[key] for r in rows])
        else:
            batch[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])
    return batch


class TextDataModule(L.LightningDataModule):
    """Loads, splits, tokenises and batches one dataset for one task."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, seed: int = 0):
        super().__init__()
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.splits: dict[str, Encoded] = {}
        self.label_names: list[str] = []
        self.raw: dict[str, pd.DataFrame] = {}
        # (epoch, batches already trained in it): set by peftlab.training.resume.ResumeState when a run resumes
        self.resume_at: tuple[int, int] = (0, 0)

    @property
    def num_labels(self) -> int:
        return max(2, len(self.label_names))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        c = self.cfg
        if c.task == "classification":
            df = self._classification_table()
        elif c.format == "pairs":
            df = self._pairs_table()
        else:
            df = None
        if df is None:
            blocks = self._text_blocks()
            parts = self._split(len(blocks))
            self.splits = {k: Encoded([blocks[i] for i in idx]) for k, idx in parts.items()}
            return
        parts = self._split(len(df))
        for split, idx in parts.items():
            part = df.iloc[idx].reset_index(drop=True)
            self.raw[split] = part
            self.splits[split] = Encoded(self._encode(part))

    # --- tables -------------------------------------------------------------------------------------------------
    def _classification_table(self) -> pd.DataFrame:
        c = self.cfg
        if c.source == "rotten_tomatoes":
            df = sources.rotten_tomatoes()
            self.label_names = ["rotten", "fresh"]
            return df
        df = sources.read_table(c.source)
        sources.require_columns(df, {"text_column": c.text_column, "label_column": c.label_column})
        labels = df[c.label_column]
        self.label_names = [str(v) for v in sorted(labels.dropna().unique())]
        if pd.api.types.is_integer_dtype(labels) and set(labels.unique()) <= set(range(len(self.label_names))):
            self.label_names = [str(i) for i in range(int(labels.max()) + 1)]
            codes = labels.astype(int)
        else:
            codes = labels.astype(str).map({n: i for i, n in enumerate(self.label_names)})
        return pd.DataFrame({"text": df[c.text_column].astype(str), "label": codes}).dropna()

    def _pairs_table(self) -> pd.DataFrame:
        c = self.cfg
        if c.source == "chatterbot":
            return sources.chatterbot_pairs()
        df = sources.read_table(c.source)
        sources.require_columns(df, {"prompt_column": c.prompt_column, "response_column": c.response_column})
        return pd.DataFrame({"prompt": df[c.prompt_column].astype(str), "response": df[c.response_column].astype(str)})

    def _split(self, n: int) -> dict[str, np.ndarray]:
        c = self.cfg
        order = np.random.default_rng(c.split_seed).permutation(n)
        n_test = min(c.test_size, n // 5)
        n_val = min(c.val_size, n // 5)
        n_train = min(c.train_size, n - n_val - n_test)
        if n_train < 1:
            raise ConfigError("data.source", c.source, f"a dataset with more rows (it has {n})")
        return {"test": order[:n_test], "val": order[n_test:n_test + n_val],
                "train": order[n_test + n_val:n_test + n_val + n_train]}

    # --- tokenisation -------------------------------------------------------------------------------------------
    def _encode(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        tok, c = self.tokenizer, self.cfg
        if c.task == "classification":
            enc = tok(list(df["text"]), truncation=True, max_length=c.max_length)
            return [{"input_ids": ids, "attention_mask": m, "labels": int(y)}
                    for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], df["label"])]
        rows = []
        prompts = tok([prompt_text(p) for p in df["prompt"]], add_special_tokens=False)["input_ids"]
        answers = tok([" " + r for r in df["response"]], add_special_tokens=False)["input_ids"]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for p, a in zip(prompts, answers):
            ids = (p + a + eos)[: c.max_length]
            labels = ([IGNORE_INDEX] * len(p) + a + eos)[: c.max_length]
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
                         "prompt_length": len(p)})
        return rows

    def _text_blocks(self) -> list[dict[str, list[int]]]:
        """Contiguous blocks of max_length tokens, enough for every split."""
        c, tok = self.cfg, self.tokenizer
        needed = (c.train_size + c.val_size + c.test_size) * c.max_length
        if c.source == "shakespeare":
            text = sources.shakespeare_text(max_chars=needed * 6)
        else:
            df = sources.read_table(c.source)
            sources.require_columns(df, {"text_column": c.text_column})
            text = "\n\n".join(df[c.text_column].astype(str))[: needed * 6]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        L_ = c.max_length
        return [{"input_ids": ids[i:i + L_], "attention_mask": [1] * L_, "labels": ids[i:i + L_]}
                for i in range(0, len(ids) - L_ + 1, L_)]

    # --- loaders ------------------------------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        ds = self.splits[split]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        epoch, done = self.resume_at
        sampler = EpochSeededSampler(len(ds), self.seed, epoch, done * batch_size) if train else None
        return DataLoader(ds, batch_size=batch_size, sampler=sampler,
                          collate_fn=lambda rows: pad_batch(rows, pad_id), num_workers=self.cfg.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.cfg.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, train=False)


def prompt_text(prompt: str) -> str:
    """How a prompt is laid out for prompt->response training and generation."""
    return f"Question: {prompt}\nAnswer:"
