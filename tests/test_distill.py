"""Distillation: each KD loss against a value computed by hand from its paper, teachers, and KD runs."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.data import prepare_for
from edgekit.models import build_model
from edgekit.recipe import load
from edgekit.runs import load_checkpoint, save_checkpoint
from edgekit.train import summary as summary_module
from edgekit.train.losses import KD_LOSSES
from edgekit.train.run import build_state
from edgekit.train.teacher import Teacher

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[0.5, 3.0, -1.0], [1.0, 0.0, 2.0]])
LABELS = torch.tensor([1, 2])


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def _ce(row: list[float], label: int) -> float:
    return -math.log(_softmax(row, 1.0)[label])


def _params(method: str, **values):
    return KD_LOSSES.get(method).params(**values)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_hinton_matches_hand_computed_value():
    t, alpha = 2.0, 0.7
    s, te = STUDENT.tolist(), TEACHER.tolist()
    kd = _mean([_kl(_softmax(b, t), _softmax(a, t)) for a, b in zip(s, te, strict=True)]) * t * t
    ce = _mean([_ce(a, int(y)) for a, y in zip(s, LABELS, strict=True)])
    expected = (1 - alpha) * ce + alpha * kd
    got = KD_LOSSES.get("hinton").fn(STUDENT, TEACHER, LABELS, _params("hinton", alpha=alpha, temperature=t))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_matches_hand_computed_value():
    """DKD (Zhao et al. 2022): tckd·KL(b_t‖b_s) + nckd·KL(p̂_t‖p̂_s), both · T²."""
    t, tckd_w, nckd_w = 3.0, 1.0, 8.0
    kd = []
    for a, b, y in zip(STUDENT.tolist(), TEACHER.tolist(), LABELS.tolist(), strict=True):
        ps, pt = _softmax(a, t), _softmax(b, t)
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        others_s = _softmax([v for i, v in enumerate(a) if i != y], t)
        others_t = _softmax([v for i, v in enumerate(b) if i != y], t)
        kd.append((tckd_w * _kl(bt, bs) + nckd_w * _kl(others_t, others_s)) * t * t)
    got = KD_LOSSES.get("dkd").fn(
        STUDENT, TEACHER, LABELS, _params("dkd", alpha=1.0, temperature=t, tckd=tckd_w, nckd=nckd_w)
    )
    assert got.item() == pytest.approx(_mean(kd), rel=1e-4)


def test_zscore_matches_hand_computed_value():
    """Logit standardization (Sun et al. 2024): z-score (unbiased std) both sides, then Hinton KD."""
    t = 2.0

    def z(row):
        m = _mean(row)
        sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
        return [(v - m) / sd for v in row]

    kd = [
        _kl(_softmax(z(b), t), _softmax(z(a), t)) * t * t
        for a, b in zip(STUDENT.tolist(), TEACHER.tolist(), strict=True)
    ]
    got = KD_LOSSES.get("zscore").fn(STUDENT, TEACHER, LABELS, _params("zscore", alpha=1.0, temperature=t))
    assert got.item() == pytest.approx(_mean(kd), rel=1e-4)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = _mean(a), _mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_dist_matches_hand_computed_value():
    """DIST (Huang et al. 2022): β(1 − mean row Pearson) + γ(1 − mean column Pearson) of the softened
    probabilities, · τ²; mixed with CE as (1 − α)·CE + α·KD."""
    t, alpha, beta, gamma = 2.0, 0.6, 1.5, 0.5
    ps = [_softmax(a, t) for a in STUDENT.tolist()]
    pt = [_softmax(b, t) for b in TEACHER.tolist()]
    inter = 1 - _mean([_pearson(a, b) for a, b in zip(ps, pt, strict=True)])
    columns = range(len(ps[0]))
    intra = 1 - _mean([_pearson([r[c] for r in ps], [r[c] for r in pt]) for c in columns])
    kd = (beta * inter + gamma * intra) * t * t
    ce = _mean([_ce(a, int(y)) for a, y in zip(STUDENT.tolist(), LABELS, strict=True)])
    params = _params("dist", alpha=alpha, temperature=t, inter=beta, intra=gamma)
    got = KD_LOSSES.get("dist").fn(STUDENT, TEACHER, LABELS, params)
    assert got.item() == pytest.approx((1 - alpha) * ce + alpha * kd, rel=1e-4)
    # A student whose predictions equal the teacher's has nothing left to learn from it.
    same = KD_LOSSES.get("dist").fn(TEACHER * 1.0, TEACHER, LABELS, _params("dist", alpha=1.0))
    assert same.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("method", KD_LOSSES.names())
def test_alpha_zero_is_plain_cross_entropy(method):
    got = KD_LOSSES.get(method).fn(STUDENT, TEACHER, LABELS, _params(method, alpha=0.0))
    assert got.item() == pytest.approx(F.cross_entropy(STUDENT, LABELS).item(), rel=1e-6)


@pytest.mark.parametrize("method", KD_LOSSES.names())
def test_kd_term_vanishes_when_student_equals_teacher_and_has_gradients(method):
    student = TEACHER.clone().requires_grad_(True)
    loss = KD_LOSSES.get(method).fn(student, TEACHER, LABELS, _params(method, alpha=1.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    moved = (TEACHER + torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -2.0]])).requires_grad_(True)
    loss = KD_LOSSES.get(method).fn(moved, TEACHER, LABELS, _params(method, alpha=1.0))
    loss.backward()
    assert loss.item() > 0 and moved.grad.abs().sum() > 0


def test_teacher_converts_the_students_normalization_exactly():
    torch.manual_seed(0)
    model = build_model("lenet", {"channels": [4]}, 1, 10, 8).eval()
    raw = torch.rand(5, 1, 8, 8)
    mean_s, std_s, mean_t, std_t = [0.3], [0.2], [0.5], [0.4]
    teacher = Teacher(model, Path("t.pt"), (mean_s, std_s), (mean_t, std_t))
    expected = model((raw - 0.5) / 0.4)
    assert torch.allclose(teacher((raw - 0.3) / 0.2), expected, atol=1e-5)
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_teacher_folds_batchnorm_into_its_convs_and_keeps_its_function():
    torch.manual_seed(0)
    model = build_model("resnet_small", {}, 1, 10, 8)
    for _ in range(3):  # running statistics away from the initial (0, 1), so folding has work to do
        model(torch.randn(16, 1, 8, 8) * 3 + 1)
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    teacher = Teacher(model, Path("t.pt"), ([0.0], [1.0]), ([0.0], [1.0]))
    norms = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(teacher(x), model(x), atol=1e-5)


def test_a_teacher_fx_cannot_trace_teaches_unfolded():
    class Branching(torch.nn.Module):  # control flow on a tensor's value: symbolic tracing fails
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.norm(self.conv(x))
            return y.flatten(1) if y.sum() > 0 else -y.flatten(1)

    model = Branching().eval()
    x = torch.randn(2, 1, 8, 8)
    teacher = Teacher(model, Path("t.pt"), ([0.0], [1.0]), ([0.0], [1.0]))
    assert teacher.model is model and torch.equal(teacher(x), model(x))


def _train(tmp_path: Path, recipe: str, *overrides: str):
    return runner.invoke(
        app, ["train", str(ROOT / "recipes" / recipe), *overrides, "--runs-dir", str(tmp_path / "runs")]
    )


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(tmp / "cache"))
        result = _train(tmp, "lenet_small.yaml", "train.epochs=4", "name=teacher", "track.wandb=disabled")
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "teacher"


def test_kd_run_end_to_end_keeps_the_teacher_frozen(tmp_path, teacher_run):
    digest = hashlib.sha256((teacher_run / "best.pt").read_bytes()).hexdigest()
    before = load_checkpoint(teacher_run / "best.pt")["model"]
    result = _train(
        tmp_path, "lenet_2k_kd.yaml", f"distill.teacher={teacher_run}", "distill.method=dkd", "train.epochs=3"
    )
    assert result.exit_code == 0, result.output
    assert "teacher val accuracy" in " ".join(result.output.split())  # rich wraps long lines
    summary = json.loads((tmp_path / "runs" / "lenet_2k_kd" / "summary.json").read_text())
    assert summary["distill"]["method"] == "dkd"
    assert summary["distill"]["teacher_val_acc"][0] > 0.5
    # The teacher scored on the student's test images: its own run's test accuracy, same split and weights.
    teacher_summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["distill"]["teacher_test_acc"] == pytest.approx(teacher_summary["test_acc"], abs=1e-6)
    assert summary["test_acc"] > 0.3  # 3 epochs: far above chance (0.1), not yet converged
    assert hashlib.sha256((teacher_run / "best.pt").read_bytes()).hexdigest() == digest
    after = load_checkpoint(teacher_run / "best.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The student's checkpoint holds only the student: it exports and resumes without the teacher's weights.
    student = load_checkpoint(tmp_path / "runs" / "lenet_2k_kd" / "best.pt")
    assert student["arch"] == "lenet" and not any(k.startswith("teacher") for k in student["model"])


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_teacher_takes_the_students_memory_layout(teacher_run, channels_last):
    flag = f"train.channels_last={str(channels_last).lower()}"
    recipe = load(ROOT / "recipes" / "lenet_2k_kd.yaml", [f"distill.teacher={teacher_run}", flag])
    state = build_state(recipe, prepare_for(recipe), bank=False)
    conv = [p for p in state.objective.teacher.parameters() if p.ndim == 4 and p.shape[1] > 1]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in conv)


def test_teachers_are_averaged_and_resume_rebuilds_them(tmp_path, teacher_run):
    result = _train(
        tmp_path,
        "lenet_1k_kd.yaml",
        f"distill.teacher=[{teacher_run}, {teacher_run / 'best.pt'}]",
        "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "lenet_1k_kd"
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["distill"]["teachers"]) == 2
    result = runner.invoke(app, ["train", "--resume", str(run), "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_the_teachers_test_accuracy_is_scored_once_per_teacher_files(tmp_path, teacher_run, monkeypatch):
    """Students of one teacher (seeds, trials) read its test accuracy from the cache; a teacher file
    that changes is scored again."""
    scored = []
    honest = summary_module.evaluate

    def counting(state, loader, model=None):
        if model is state.objective.teacher:
            scored.append(model)
        return honest(state, loader, model)

    monkeypatch.setattr(summary_module, "evaluate", counting)
    teacher = shutil.copytree(teacher_run, tmp_path / "teacher")
    accs = []
    for seed in (0, 1, 2):
        if seed == 2:  # the file changes (as a retrained teacher's would): here only its time stamp
            os.utime(teacher / "best.pt", ns=(1, 1))
        result = _train(
            tmp_path,
            "lenet_1k_kd.yaml",
            f"distill.teacher={teacher}",
            "train.epochs=1",
            f"seed={seed}",
            f"name=s{seed}",
            "track.wandb=disabled",
        )
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / "runs" / f"s{seed}" / "summary.json").read_text())
        accs.append(summary["distill"]["teacher_test_acc"])
    assert len(scored) == 2  # seed 0 scored it, seed 1 read it, seed 2's new file was scored again
    assert accs[0] == accs[1] == accs[2] > 0.5


def test_near_chance_teacher_stops_the_run(tmp_path, teacher_run):
    ckpt = load_checkpoint(teacher_run / "best.pt")
    fresh = build_model(
        ckpt["arch"], ckpt["options"], ckpt["in_channels"], ckpt["num_classes"], ckpt["image_size"]
    )
    ckpt["model"] = fresh.state_dict()  # what a teacher whose weights were never loaded looks like
    ckpt.pop("format")
    save_checkpoint(tmp_path / "untrained.pt", ckpt)
    result = _train(tmp_path, "lenet_2k_kd.yaml", f"distill.teacher={tmp_path / 'untrained.pt'}")
    assert result.exit_code == 2
    assert "near chance" in " ".join(result.output.split())
    assert not (tmp_path / "runs" / "lenet_2k_kd").exists()  # refused before any run folder is made


def test_mismatched_teacher_is_refused(tmp_path, teacher_run):
    result = _train(tmp_path, "lenet_2k_kd.yaml", f"distill.teacher={teacher_run}", "data.image_size=12")
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "image_size is 8" in output and "has 12" in output, output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.method=hintn", "unknown distillation method 'hintn' (did you mean 'hinton'?)"),
        ("distill.teacher=nowhere", "distill.teacher = 'nowhere': no such run folder"),
        ("distill.alpha=2", "distill.alpha = 2"),
        ("distill.temprature=2", "distill.temprature: unknown key (did you mean 'temperature'?)"),
        ("distill.precompute=always", "distill.precompute = 'always'"),
    ],
)
def test_bad_distill_input_is_one_line_exit_2(tmp_path, teacher_run, override, message):
    teacher = f"distill.teacher={teacher_run}"
    result = _train(tmp_path, "lenet_2k_kd.yaml", teacher, override)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_teacher_path_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _train(tmp_path, "lenet_2k_kd.yaml", f"distill.teacher={tmp_path / 'empty'}")
    assert result.exit_code == 2
    assert "not an edgekit run" in " ".join(result.output.split())
