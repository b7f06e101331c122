"""`edgekit pipeline`: teacher → [assistant →] KD student → prune + fine-tune → export → int8 → bench.

Each stage is the ordinary command's own function reading the previous stage's folder, so every
intermediate result is a normal run or bundle. Outputs go to `runs/<name>/`, `export/<name>/` and
`bench/<name>/`. Run the same command again after an interruption: finished stages are skipped (their
folders are the record), a half-trained run is resumed from its last epoch, and the rest follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from edgekit.bundle_meta import META_FILE
from edgekit.errors import EdgekitError
from edgekit.recipe import describe
from edgekit.runs import Run


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainStage(_Strict):
    recipe: str  # relative to the pipeline file
    overrides: list[str] = Field(default_factory=list)


class TeacherStage(TrainStage):
    # An ensemble of this many runs of the recipe (seeds 0, 1, …) whose averaged logits teach: on small
    # data steadier and stronger than one run (bench/frontier.md). Their folders: teacher, teacher_seed1, …
    members: int = Field(1, ge=1)


class PruneStage(_Strict):
    macs: float | None = 0.5
    params: float | None = None
    importance: str = "l1"
    steps: int = 1
    global_pruning: bool = False
    round_to: int | None = None
    finetune_epochs: int = 30
    lr: float | None = None
    overrides: list[str] = Field(default_factory=list)


class QuantizeStage(_Strict):
    kind: str = "int8"
    options: dict[str, Any] = Field(default_factory=dict)  # e.g. calib, method, max_drop


class BenchStage(_Strict):
    runtimes: list[str] | None = None
    threads: int | None = 1
    batch: list[int] = Field(default_factory=lambda: [1, 32])


class PipelineFile(_Strict):
    name: str | None = None
    teacher: TeacherStage
    # A teacher assistant (Mirzadeh et al., AAAI 2020): a mid-sized model distilled from the teacher
    # that then teaches the student, bridging a capacity gap too wide for the student to follow.
    assistant: TrainStage | None = None
    student: TrainStage
    prune: PruneStage | None = None  # None: skip pruning
    quantize: QuantizeStage | None = None  # None: keep fp32 only
    bench: BenchStage = Field(default_factory=BenchStage)


@dataclass
class Where:
    """The pipeline's folders and the console every stage reports to."""

    file: Path
    name: str
    runs: Path
    exports: Path
    bench: Path
    console: Console


def load_pipeline(path: Path) -> PipelineFile:
    if not Path(path).is_file():
        raise EdgekitError(f"{path}: no such pipeline file")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    try:
        spec = PipelineFile.model_validate(raw)
    except ValidationError as e:
        raise EdgekitError(describe(e, PipelineFile, (), str(path))) from None
    for stage in (spec.teacher, spec.assistant, spec.student):
        if stage is not None and not (Path(path).parent / stage.recipe).is_file():
            raise EdgekitError(f"{path}: recipe '{stage.recipe}' not found next to the pipeline file")
    return spec


def run_pipeline(path: Path, runs: Path, exports: Path, bench: Path, console: Console) -> dict:
    """Run (or finish) every stage in order; returns the bench results."""
    spec = load_pipeline(path)
    name = spec.name or Path(path).stem
    at = Where(Path(path), name, runs / name, exports / name, bench / name, console)
    _check_stage_options(spec)
    members = spec.teacher.members
    teachers = [
        _train(at, f"teacher_seed{m}" if m else "teacher", spec.teacher, [f"seed={m}"] if members > 1 else [])
        for m in range(members)
    ]
    teacher, tutors = teachers[0], teachers  # who teaches the student: the teachers, or their assistant
    if spec.assistant:
        tutors = [_train(at, "assistant", spec.assistant, [_taught_by(teachers)])]
    student = _train(at, "student", spec.student, [_taught_by(tutors)])
    final = _prune(at, spec.prune, student) if spec.prune else student
    bundles = [_export(at, run) for run in dict.fromkeys([teacher, student, final])]
    if spec.quantize:
        _quantize(at, spec.quantize, bundles[-1])
    from edgekit.bench.run import bench as measure

    b = spec.bench
    _say(at, "bench", f"{', '.join(p.name for p in bundles)} → {at.bench}")
    return measure(bundles, b.runtimes, b.threads, b.batch, at.bench, console=console)


def _taught_by(runs: list[Path]) -> str:
    return f"distill.teacher=[{', '.join(str(r.resolve()) for r in runs)}]"


def _check_stage_options(spec: PipelineFile) -> None:
    """Option errors of later stages surface before hours of training, not after."""
    if spec.prune:
        from edgekit.prune.prune import How, check, target

        p = spec.prune
        metric, keep = target(p.macs if p.params is None else None, p.params)
        check(How(metric, keep, p.importance, p.steps, p.global_pruning, p.round_to), p.finetune_epochs, p.lr)


def _say(at: Where, stage: str, text: str) -> None:
    at.console.rule(f"[bold]{at.name}: {stage}[/]")
    at.console.print(text, highlight=False, markup=False)  # commands hold brackets (lists)


def _latest(folder: Path, name: str) -> Path | None:
    """The newest of `name`, `name-2`, … (a stage restarted from nothing gets the next number)."""
    numbered = [p for p in folder.glob(f"{name}-*") if p.name[len(name) + 1 :].isdigit()]
    found = [folder / name] if (folder / name).is_dir() else []
    found += sorted(numbered, key=lambda p: int(p.name[len(name) + 1 :]))
    return found[-1] if found else None


def _continue(at: Where, stage: str, run: Path | None) -> Path | None:
    """The stage's finished run, or the resumed one; None when it must start from nothing."""
    from edgekit.train import run as train

    state = Run(run).status().state if run is not None else "new"
    if state == "finished":
        _say(at, stage, f"done: {run}")
        return run
    if state == "partial":
        _say(at, stage, f"resuming {run}")
        return train.resume(run, [], at.console)
    return None


def _train(at: Where, stage: str, spec: TrainStage, extra: list[str]) -> Path:
    from edgekit.train import run as train

    found = _continue(at, stage, _latest(at.runs, stage))
    if found is not None:
        return found
    recipe = at.file.parent / spec.recipe
    _say(at, stage, f"edgekit train {recipe} {' '.join([*spec.overrides, *extra])}")
    return train.start(recipe, [*spec.overrides, *extra, f"name={stage}"], at.runs, at.console)


def _prune(at: Where, spec: PruneStage, student: Path) -> Path:
    from edgekit.prune.prune import How, prune_run, target

    found = _continue(at, "prune", _latest(at.runs, f"{student.name}-pruned"))
    if found is not None:
        return found
    metric, keep = target(spec.macs if spec.params is None else None, spec.params)
    how = How(metric, keep, spec.importance, spec.steps, spec.global_pruning, spec.round_to)
    _say(at, "prune", f"edgekit prune {student} --{metric} {keep} --finetune-epochs {spec.finetune_epochs}")
    return prune_run(student, how, spec.finetune_epochs, spec.lr, spec.overrides, at.runs, at.console)


def _export(at: Where, run: Path) -> Path:
    from edgekit.export.write import export_run

    bundle = at.exports / run.name
    if (bundle / META_FILE).is_file():
        _say(at, "export", f"done: {bundle}")
        return bundle
    _say(at, "export", f"edgekit export --onnx {run} → {bundle}")
    return export_run(run, out_root=at.exports, console=at.console)


def _quantize(at: Where, spec: QuantizeStage, bundle: Path) -> None:
    from edgekit.bundle import read_bundle
    from edgekit.quantize.quantize import quantize_bundle, variant_of

    variant = variant_of(spec.kind, spec.options)
    if variant in read_bundle(bundle, check_model=False)[0].variants:
        _say(at, "quantize", f"done: {bundle} has {variant}")
        return
    _say(at, "quantize", f"edgekit quantize {bundle} --{spec.kind}")
    quantize_bundle(bundle, spec.kind, console=at.console, **spec.options)
