"""The proposal generator: assignment, matching costs, losses, targets, the network, training (checkpoint,
interrupt, exact resume), the model file and its loader, and `maskclip train-proposals`."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import main
from maskclip.io.tensorfile import CheckedFileError, save_checked
from maskclip.proposals import (
    CriterionConfig,
    ProposalConfig,
    ProposalGenerator,
    ProposalJob,
    ProposalSchedule,
    TrainingInterrupted,
    build_proposal_model,
    train_proposals,
)
from maskclip.proposals.files import load_model_file, load_train_file
from maskclip.proposals.losses import SetCriterion, dice_loss, sigmoid_bce_loss, sigmoid_focal_loss
from maskclip.proposals.matching import hungarian_match, linear_assignment, matching_cost
from maskclip.proposals.targets import SemanticTargets, seen_lookup, semantic_targets
from maskclip.proposals.train import param_groups
from maskclip.regions.masks import MaskSet
from maskclip.toyworld import CLASSES, World, WorldConfig

pytestmark = pytest.mark.filterwarnings("ignore:proposal model. the backbone is RANDOMLY")
UNSEEN = ("turtle", "balloon", "fish")
TINY = ProposalConfig(width=8, conv_dim=16, mask_dim=16, hidden_dim=16, num_queries=6, dec_layers=2, heads=2,
                      ffn_dim=32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: more threads cost more than they save and stall on a busy machine (module scope, so
    that the module's training fixtures run under it too)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _total(cost, rows, cols):
    return float(np.asarray(cost)[rows, cols].sum())


def test_linear_assignment_matches_scipy_on_random_rectangular_matrices():
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 7), (7, 1), (5, 5), (6, 13), (13, 6), (20, 3), (3, 20), (30, 30), (17, 25)]:
        for _ in range(5):
            cost = rng.normal(size=(n, m)) * rng.choice([0.01, 1, 100])
            rows, cols = linear_assignment(cost)
            ref_rows, ref_cols = scipy_opt.linear_sum_assignment(cost)
            assert len(rows) == min(n, m) and len(set(cols.tolist())) == len(cols)
            assert np.all(np.diff(rows) > 0)
            assert _total(cost, rows, cols) == pytest.approx(_total(cost, ref_rows, ref_cols), rel=1e-12, abs=1e-12)
            np.testing.assert_array_equal(rows, ref_rows)  # continuous costs: the optimum is unique
            np.testing.assert_array_equal(cols, ref_cols)
    ties = rng.integers(0, 3, size=(8, 11)).astype(float)
    for c in (ties, ties.T):  # many optima: the cost must still be the minimal one
        assert _total(c, *linear_assignment(c)) == _total(c, *scipy_opt.linear_sum_assignment(c))


def test_linear_assignment_against_brute_force():
    rng = np.random.default_rng(1)
    for n, m in [(2, 2), (3, 3), (2, 5), (5, 2), (4, 6), (6, 4), (5, 5)]:
        for _ in range(10):
            cost = rng.integers(-5, 6, size=(n, m)).astype(float) + rng.random((n, m)) * 0.1
            wide = cost if n <= m else cost.T  # every injective map of the shorter side into the longer
            k = min(n, m)
            best = min(sum(wide[i, p[i]] for i in range(k)) for p in itertools.permutations(range(max(n, m)), k))
            assert _total(cost, *linear_assignment(cost)) == pytest.approx(best, abs=1e-9)


def test_linear_assignment_edge_cases():
    rows, cols = linear_assignment(np.zeros((0, 4)))
    assert rows.shape == cols.shape == (0,)
    assert linear_assignment([[3.0]]) == (np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="finite"):
        linear_assignment([[1.0, np.nan]])
    with pytest.raises(ValueError, match="2-D"):
        linear_assignment([1.0, 2.0])


def _focal(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + np.exp(-x))
    return -alpha * t * (1 - p) ** gamma * np.log(p) - (1 - alpha) * (1 - t) * p ** gamma * np.log(1 - p)


def _bce(x, t):
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _dice(x, t, v):
    p = 1 / (1 + np.exp(-x)) * v
    t = t * v
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


@pytest.mark.parametrize("mask_loss", ["focal", "bce"])
def test_matching_cost_equals_an_explicit_per_pair_loop(mask_loss):
    g = torch.Generator().manual_seed(0)
    n, s, t, p = 5, 4, 3, 37
    logits, masks = torch.randn(n, s + 1, generator=g), torch.randn(n, p, generator=g) * 3
    labels = torch.tensor([2, 0, 3])
    tmasks = torch.rand(t, p, generator=g) > 0.5
    valid = torch.rand(p, generator=g) > 0.3
    cfg = CriterionConfig(mask_loss=mask_loss, class_weight=1.5, mask_weight=20.0, dice_weight=2.0)
    cost = matching_cost(logits, masks, labels, tmasks, valid, cfg).double().numpy()
    prob = torch.softmax(logits.double(), -1).numpy()
    x, tm, v = masks.double().numpy(), tmasks.double().numpy(), valid.double().numpy()
    for q in range(n):
        for j in range(t):
            per_px = _focal(x[q], tm[j]) if mask_loss == "focal" else _bce(x[q], tm[j])
            want = -1.5 * prob[q, labels[j]] + 20.0 * (per_px * v).sum() / v.sum() + 2.0 * _dice(x[q], tm[j], v)
            assert cost[q, j] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_losses_equal_their_formulas_on_tiny_tensors():
    x = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.0, 4.0, -0.5, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    xn, tn, vn = x.numpy(), t.numpy(), v.numpy().astype(float)
    for i in range(2):
        mean = vn[i].sum()
        assert float(sigmoid_focal_loss(x, t, v)[i]) == pytest.approx((_focal(xn[i], tn[i]) * vn[i]).sum() / mean)
        assert float(sigmoid_bce_loss(x, t, v)[i]) == pytest.approx((_bce(xn[i], tn[i]) * vn[i]).sum() / mean)
        assert float(dice_loss(x, t, v)[i]) == pytest.approx(_dice(xn[i], tn[i], vn[i]))
        assert float(sigmoid_focal_loss(x, t)[i]) == pytest.approx(_focal(xn[i], tn[i]).mean())
        assert float(dice_loss(x, t)[i]) == pytest.approx(_dice(xn[i], tn[i], np.ones(4)))
    assert float(sigmoid_focal_loss(x, t, alpha=-1, gamma=0)[0]) == pytest.approx(_bce(xn[0], tn[0]).mean())


def test_set_criterion_weights_no_object_and_supervises_every_layer():
    g = torch.Generator().manual_seed(3)
    s, n = 3, 4
    out = {"pred_logits": torch.randn(1, n, s + 1, generator=g), "pred_masks": torch.randn(1, n, 4, 4, generator=g)}
    out["aux_outputs"] = [{"pred_logits": torch.randn(1, n, s + 1, generator=g),
                           "pred_masks": torch.randn(1, n, 4, 4, generator=g)}]
    label = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [255, 0, 2, 2], [0, 0, 2, 2]])
    targets = [semantic_targets(label, seen_lookup(s, range(s)))]
    cfg = CriterionConfig()
    losses = SetCriterion(cfg, s)(out, targets)
    assert set(losses) == {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    rows, cols = hungarian_match(out, targets, cfg)[0]
    cls = torch.full((n,), s)
    cls[rows] = targets[0].labels[cols]
    w = torch.tensor([1.0] * s + [0.1])
    nll = -torch.log_softmax(out["pred_logits"][0], -1)[torch.arange(n), cls]
    assert float(losses["loss_ce"]) == pytest.approx(float((w[cls] * nll).sum() / w[cls].sum()), rel=1e-6)
    total = sum(cfg.class_weight * losses[f"loss_ce{k}"] + cfg.mask_weight * losses[f"loss_mask{k}"]
                + cfg.dice_weight * losses[f"loss_dice{k}"] for k in ("", "_0"))
    assert float(losses["loss"]) == pytest.approx(float(total), rel=1e-6)
    assert "loss_ce_0" not in SetCriterion(replace(cfg, deep_supervision=False), s)(out, targets)
    empty = SetCriterion(cfg, s)(out, [semantic_targets(torch.full((4, 4), 255), seen_lookup(s, range(s)))])
    assert float(empty["loss_mask"]) == 0.0 and float(empty["loss_ce"]) > 0


def test_hungarian_match_recovers_a_planted_assignment():
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4], masks[1, 4:, :4], masks[2, 4:, 4:] = True, True, True
    t = SemanticTargets(torch.tensor([0, 1, 2]), masks, torch.ones(8, 8, dtype=torch.bool))
    perm = [4, 0, 2]  # query perm[j] predicts target j exactly; queries 1 and 3 predict nothing
    logits, pred = torch.full((1, 5, 4), -5.0), torch.full((1, 5, 8, 8), -8.0)
    for j, q in enumerate(perm):
        logits[0, q, j] = 5.0
        pred[0, q][masks[j]] = 8.0
    rows, cols = hungarian_match({"pred_logits": logits, "pred_masks": pred}, [t], CriterionConfig())[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 1: 0, 2: 2}


def test_targets_from_a_semantic_map_leave_unseen_and_ignore_pixels_out():
    # classes 0..4; 1 and 3 unseen; 255 ignore; -1 what the crop stream makes of suppressed unseen pixels
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 255], [4, -1, 4, 0]])
    t = semantic_targets(label, seen_lookup(5, [0, 2, 4]))
    assert t.labels.tolist() == [0, 1, 2]  # seen indices of classes 0, 2, 4
    np.testing.assert_array_equal(t.valid.numpy(), [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 1]])
    np.testing.assert_array_equal(t.masks[0].numpy(), label.numpy() == 0)
    np.testing.assert_array_equal(t.masks[2].numpy(), label.numpy() == 4)
    assert not (t.masks & ~t.valid).any()
    none = semantic_targets(np.full((3, 3), 255), seen_lookup(5, [0]))
    assert none.masks.shape == (0, 3, 3) and not none.valid.any()


@pytest.mark.parametrize("size,stride", [((64, 64), 4), ((50, 70), 8)])
def test_forward_shapes(size, stride):
    torch.manual_seed(0)
    model = build_proposal_model(replace(TINY, mask_stride=stride), 7, warn_random_init=False).eval()
    out = model(torch.randn(2, 3, *size))
    assert out["pred_logits"].shape == (2, 6, 8)
    assert out["pred_masks"].shape == (2, 6, -(-size[0] // stride), -(-size[1] // stride))
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_masks"].shape == out["pred_masks"].shape
    assert model(torch.randn(1, 3, *size), aux=False)["aux_outputs"] == []


def test_optimizer_groups_follow_maskformer():
    model = build_proposal_model(TINY, 3, warn_random_init=False)
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.1)}
    assert set(groups) == {"backbone", "backbone-no-decay", "head", "head-no-decay"}
    assert groups["backbone"]["lr_mult"] == 0.1 and groups["head"]["lr_mult"] == 1.0
    assert groups["head-no-decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 1e-4
    assert any(p is model.query_embed.weight for p in groups["head-no-decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """8 toy-world scenes at 64 px as PNG folders (as benchmarks/toyworld_plus.py writes them)."""
    root = tmp_path_factory.mktemp("proposals-world")
    for d in ("images", "labels"):
        (root / d).mkdir()
    for i in range(8):
        s = World(0, WorldConfig(size=64)).scene(i)
        Image.fromarray(s.image).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(s.labels.astype(np.uint8)).save(root / "labels" / f"{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def make_job(world: Path, out: Path, **schedule) -> ProposalJob:
    base = dict(iterations=30, batch_size=2, crop_size=(48, 48), scale=(64, 64), lr=3e-3, log_every=1,
                checkpoint_every=10, photometric=False)
    base.update(schedule)
    return ProposalJob(world / "images", world / "labels", str(world / "classes.txt"), out, UNSEEN, TINY,
                       CriterionConfig(), ProposalSchedule(**base))


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    path = train_proposals(make_job(world, out), device="cpu", progress=False)
    assert path == out / "model.pt"
    return out


def test_training_lowers_the_loss_and_writes_checkpoint_log_and_model(trained):
    log = records(trained / "log.jsonl")
    assert [r["iter"] for r in log] == list(range(1, 31))
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses
    assert log[-1]["lr"] < log[0]["lr"]
    ck = load_train_file(trained / "checkpoint.pt")
    assert ck["iteration"] == 30 and ck["description"]["seen"] == [c for c in CLASSES if c not in UNSEEN]
    run = json.loads((trained / "run.json").read_text())
    assert run["description"]["unseen"] == list(UNSEEN) and run["class_pixels"]["sky"] >= 0


def test_sigterm_checkpoints_and_resume_reproduces_the_uninterrupted_run(world, trained, tmp_path):
    out = tmp_path / "interrupted"

    def sigterm_at_17(rec):
        if rec["iter"] == 17:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        train_proposals(make_job(world, out), device="cpu", progress=False, log_fn=sigterm_at_17)
    assert info.value.iteration == 17 and info.value.reason == "SIGTERM"
    assert load_train_file(out / "checkpoint.pt")["iteration"] == 17 and not (out / "model.pt").exists()
    with pytest.raises(Exception, match="pass --resume"):
        train_proposals(make_job(world, out), device="cpu", progress=False)
    train_proposals(replace(make_job(world, out), resume=True), device="cpu", progress=False)
    a, b = load_model_file(trained / "model.pt")[0].state_dict(), load_model_file(out / "model.pt")[0].state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    full, resumed = load_train_file(trained / "checkpoint.pt"), load_train_file(out / "checkpoint.pt")
    sa, sb = full["optimizer"]["state"], resumed["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_a_first_ctrl_c_finishes_the_step_and_checkpoints(world, tmp_path):
    def sigint_at_2(rec):
        if rec["iter"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT: stopped at iteration 2"):
        train_proposals(make_job(world, tmp_path / "int", iterations=4), device="cpu", progress=False,
                        log_fn=sigint_at_2)
    assert load_train_file(tmp_path / "int" / "checkpoint.pt")["iteration"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are restored


def test_resume_with_another_network_is_refused(world, trained, tmp_path):
    job = replace(make_job(world, trained), resume=True, model=replace(TINY, num_queries=7))
    with pytest.raises(Exception, match="different config"):
        train_proposals(job, device="cpu", progress=False)


def test_the_model_file_loads_and_proposes_a_maskset(world, trained):
    gen = ProposalGenerator.load(trained / "model.pt")
    image = np.asarray(Image.open(world / "images" / "000.png").convert("RGB"))[:40, :56].copy()
    ms = gen.propose(image)
    assert isinstance(ms, MaskSet) and ms.masks.shape == (6, 40, 56) and ms.masks.dtype == np.float32
    assert 0 <= ms.masks.min() and ms.masks.max() <= 1
    assert ms.scores.shape == (6, 7) and ms.seen == tuple(c for c in CLASSES if c not in UNSEEN)
    no_object = np.array([r["no_object"] for r in ms.records])
    np.testing.assert_allclose(ms.scores.sum(1) + no_object, 1.0, atol=1e-5)
    assert [r["query"] for r in ms.records] == list(range(6))
    assert (sem := gen.semantic(image)).shape == (7, 40, 56)
    np.testing.assert_allclose(sem, np.einsum("qc,qhw->chw", ms.scores, ms.masks), rtol=1e-4, atol=1e-5)
    cut = float(np.median(no_object))
    kept = ProposalGenerator.load(trained / "model.pt", no_object_threshold=cut).propose(image)
    assert [r["query"] for r in kept.records] == [i for i, p in enumerate(no_object) if p <= cut]
    assert len(ProposalGenerator.load(trained / "checkpoint.pt").propose(image)) == 6  # a checkpoint loads too


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_and_foreign_files_are_refused_with_one_line(tmp_path):
    marker = tmp_path / "ran"
    evil, torch_evil = tmp_path / "evil.pt", tmp_path / "evil_torch.pt"
    evil.write_bytes(pickle.dumps({"format": "maskclip-proposals/1", "model": _Payload(marker)}))
    torch.save({"format": "maskclip-proposals/1", "x": _Payload(marker)}, torch_evil)
    other = save_checked(tmp_path / "plus.pt", "maskclip-plus-model/2", {"model": {}}, {})
    for path, pattern in [(evil, "cannot be loaded safely"), (torch_evil, "cannot be loaded safely"),
                          (other, "is a maskclip-plus-model/2 file, expected maskclip-proposals/1")]:
        with pytest.raises(CheckedFileError) as info:
            ProposalGenerator.load(path)
        assert re.search(pattern, str(info.value)) and "\n" not in str(info.value), str(info.value)
    assert not marker.exists()
    broken = save_checked(tmp_path / "broken.pt", "maskclip-proposals/1", {"model": {}}, {"model": {"seen": ["a"]}})
    with pytest.raises(CheckedFileError, match="cannot be rebuilt"):
        ProposalGenerator.load(broken)


def _fails(capsys, argv, pattern):
    """Exit status 2 and one line on stderr matching `pattern`, from argparse or from a SettingsError."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def _cmd(world: Path, out: Path, *extra: str) -> list[str]:
    return ["train-proposals", str(world / "images"), str(world / "labels"), "--classes", str(world / "classes.txt"),
            "--unseen", ",".join(UNSEEN), "--out", str(out), "--width", "8", "--queries", "4", "--hidden-dim", "16",
            "--mask-dim", "16", "--conv-dim", "16", "--heads", "2", "--ffn-dim", "16", "--crop", "32",
            "--scale", "64,64", "--batch-size", "2", "--quiet", *extra]


def test_command_help_bad_options_and_a_tiny_run(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train-proposals", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "IMAGES_DIR" in text and "--unseen" in text and "default: 20.0" in text and "default: 0.0001" in text
    _fails(capsys, _cmd(world, tmp_path / "a", "--unseen", "unicorn"), r"--unseen: 'unicorn' is not one of")
    _fails(capsys, _cmd(world, tmp_path / "b", "--crop", "0"), r"--crop: expected N or H,W")
    _fails(capsys, _cmd(world, tmp_path / "c", "--pretrained", "imagenet"), r"ImageNet weights need --width 64")
    _fails(capsys, ["train-proposals", str(world / "images"), str(tmp_path), "--classes", "a,b", "--out",
                    str(tmp_path / "d")], r"no label file")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert main(_cmd(world, out, "--iterations", "2", "--log-every", "1")) == 0
    assert (out / "model.pt").is_file() and len(records(out / "log.jsonl")) == 2
    _fails(capsys, _cmd(world, out, "--iterations", "2"), r"checkpoint.pt exists; pass --resume")
    _fails(capsys, _cmd(world, out, "--iterations", "2", "--resume", "--queries", "5"), r"different config")


def test_label_values_outside_the_classes_are_reported_before_training(world, tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    for p in sorted((world / "labels").iterdir()):
        lab = np.array(Image.open(p))
        if p.stem == "003":
            lab[5:9, 5:9] = 42
        Image.fromarray(lab).save(labels / p.name)
    argv = _cmd(world, tmp_path / "out", "--iterations", "1")
    argv[2] = str(labels)
    _fails(capsys, argv, r"003\.png: label values \[42\] are neither class ids")
