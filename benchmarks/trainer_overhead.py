"""The framework's overhead: peftlab's FineTuneModule + Lightning Trainer (as `peftlab-train` builds it, with its
callbacks and CSV logger) vs a plain PyTorch loop doing the same optimisation steps (same model, LoRA, batches,
AdamW, linear schedule, gradient clipping, precision).

Both sides are timed by the same StepTimer: step time brackets forward, backward and optimiser step (Lightning's
per-step hooks and logging included on its side); iteration time runs from one step's end to the next (fetching the
batch included). The sides alternate, `rounds` times each, each round on a freshly built model; samples pool per side.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from benchmarks.common import arg_parser, RESULTS, Suite, build_base, ratio, suite_for, write_result
from peftlab import ROOT
from peftlab.backbones.families import family_for
from peftlab.backbones.loader import load_tokenizer
from peftlab.data import DataConfig, TextDataModule
from peftlab.measure import StepTimer, autocast, batch_size_and_tokens
from peftlab.methods import build_method
from peftlab.run import AUTOCAST, build_trainer
from peftlab.spec import MeasureConfig, RunSpec
from peftlab.training.callbacks import DivergenceGuard, EpochReseed, TrainCost
from peftlab.training.module import MODEL_INPUTS, FineTuneModule, OptimConfig, linear_schedule

SEED = 0


def make_spec(suite: Suite, log_dir: Path) -> RunSpec:
    """The run a `peftlab-train` job would be, from the project's trainer config, cut to `steps` steps."""
    o = suite.overhead
    trainer = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(ROOT / "conf/trainer/default.yaml")).items()}
    trainer |= {"max_steps": o.steps, "max_epochs": -1, "limit_val_batches": 0, "enable_progress_bar": False,
                "accelerator": "gpu" if suite.device == "cuda" else "cpu", "precision": o.precision}
    logger = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(log_dir), "name": "logs", "version": ""}
    data = DataConfig(**({"name": "rotten_tomatoes"} | o.data))
    return RunSpec(model=o.model.model_config(), data=data, method=build_method({"name": "lora"}),
                   optim=OptimConfig(lr=1e-3), measure=MeasureConfig(train_warmup_steps=o.warmup), trainer=trainer,
                   logger=logger, seed=SEED, name="trainer_overhead")


def data_module(spec: RunSpec) -> TextDataModule:
    dm = TextDataModule(spec.data, load_tokenizer(spec.model), seed=SEED)
    dm.setup()
    return dm


def fresh_model(suite: Suite, spec: RunSpec, num_labels: int) -> torch.nn.Module:
    """The backbone with LoRA applied, built the same way for both sides."""
    model = build_base(suite.overhead.model, suite.device, num_labels)
    spec.method.apply(model, family_for(model))
    return model


def lightning_round(suite: Suite, spec: RunSpec, dm: TextDataModule) -> tuple[StepTimer, float]:
    L.seed_everything(SEED, verbose=False)
    module = FineTuneModule(fresh_model(suite, spec, dm.num_labels), spec.data.task, spec.optim)
    cost = TrainCost(suite.overhead.warmup)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(spec, Path(run_dir), [cost, DivergenceGuard(), EpochReseed(SEED)])
        trainer.fit(module, datamodule=dm)
    return cost.timer, float(trainer.callback_metrics["train_loss_step"])


def plain_round(suite: Suite, spec: RunSpec, dm: TextDataModule) -> tuple[StepTimer, float]:
    """What a user would write by hand: the same steps with no framework."""
    L.seed_everything(SEED, verbose=False)
    o, optim = suite.overhead, spec.optim
    model = fresh_model(suite, spec, dm.num_labels)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas),
                            eps=optim.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(o.steps, int(optim.warmup_ratio * o.steps)))
    dtype = AUTOCAST.get(o.precision)
    clip = spec.trainer.get("gradient_clip_val")
    timer = StepTimer(o.warmup, suite.device)
    loss = torch.tensor(float("nan"))
    for batch in itertools.islice(itertools.cycle(dm.train_dataloader()), o.steps):
        batch = {k: v.to(suite.device) for k, v in batch.items() if k in MODEL_INPUTS}
        timer.start()
        with autocast(suite.device, dtype):
            loss = model(**batch).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        timer.stop(*batch_size_and_tokens(batch))
    return timer, float(loss.detach())


def pooled(timers: list[StepTimer]) -> dict[str, Any]:
    """One StepTimer result over the timed steps of several rounds."""
    pool = StepTimer(timers[0].warmup)
    for t in timers:
        pool.step_times += t.step_times
        pool.iteration_times += t.iteration_times
        pool.samples += t.samples
        pool.tokens += t.tokens
    return pool.result()


def main(quick: bool = False, device: str | None = None, out: Path = RESULTS) -> str:
    suite = suite_for(quick, device)
    o = suite.overhead
    with tempfile.TemporaryDirectory() as log_dir:
        spec = make_spec(suite, Path(log_dir))
        dm = data_module(spec)
        timers: dict[str, list[StepTimer]] = {"peftlab": [], "plain": []}
        losses: dict[str, list[float]] = {"peftlab": [], "plain": []}
        for _ in range(o.rounds):
            for side, fn in (("peftlab", lightning_round), ("plain", plain_round)):
                timer, loss = fn(suite, spec, dm)
                timers[side].append(timer)
                losses[side].append(loss)
    res = {side: pooled(t) for side, t in timers.items()}
    rows = []
    for label, key, target in (("step time median (ms)", "step_time_median_s", ""),
                               ("step time p90 (ms)", "step_time_p90_s", ""),
                               ("iteration time median (ms)", "iteration_time_median_s", "<= 1.10"),
                               ("iteration time p90 (ms)", "iteration_time_p90_s", "")):
        a, b = res["peftlab"].get(key), res["plain"].get(key)
        rows.append([label, a and a * 1e3, b and b * 1e3, ratio(a, b), target])
    a, b = res["peftlab"].get("train_samples_per_s"), res["plain"].get("train_samples_per_s")
    rows.append(["train samples/s (step time only)", a, b, ratio(a, b), ""])
    rows.append(["last training loss (same steps)", losses["peftlab"][-1], losses["plain"][-1], None, ""])
    notes = [f"{o.model.describe(batch=False)}, data {spec.data.source} (batch {spec.data.batch_size}, max_length "
             f"{spec.data.max_length}), LoRA defaults "
             f"(r=8 on query and value), AdamW lr {spec.optim.lr:g}, precision {o.precision}, on {suite.device}"
             f"{f', {suite.threads} torch thread(s)' if suite.threads else ''}.",
             f"{o.rounds} rounds per side, alternating, {o.steps} steps each, the first {o.warmup} of each round "
             "excluded; progress bar off, CSV logger on, validation off (both sides train only).",
             "Iteration time (one step's end to the next: batch fetch, copy, step, hooks, logging) is the overhead "
             "measure; step time excludes the batch fetch."]
    return write_result(out, "trainer_overhead", suite, {"results": res, "last_losses": losses},
                        ["measure", "peftlab trainer", "plain loop", "trainer / plain", "target"], rows, notes)


if __name__ == "__main__":
    parser = arg_parser(__doc__)
    args = parser.parse_args()
    print(main(args.quick, args.device, args.out))
