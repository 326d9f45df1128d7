import json
import math

import numpy as np
import pytest

from microgradcnn import nn, optim
from microgradcnn.optim import lr_scheduler as sched


def two_groups(dtype=np.float64):
    r = np.random.default_rng(0)
    a = nn.Parameter(r.standard_normal((3, 2)).astype(dtype))
    b = nn.Parameter(r.standard_normal(4).astype(dtype))
    return [a, b]


def make_optimizer(name, params, **kwargs):
    # two groups with different rates: a scheduler handles each group on its own
    return getattr(optim, name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.3}], lr=0.1, **kwargs)


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def trace(opt, scheduler, steps, step_optimizer=lambda: None):
    """The rates (and momenta) in use for each of ``steps`` optimizer steps, then after the last."""
    lrs, moms = [scheduler.get_last_lr()], [momenta(opt)]
    for _ in range(steps):
        step_optimizer()
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
        moms.append(momenta(opt))
    return np.array(lrs), np.array(moms)


# (scheduler, its arguments, optimizer, its arguments, steps): the lr (and momentum) sequences to compare
SCHEDULE_CASES = [
    ("StepLR", {"step_size": 3}, "SGD", {"momentum": 0.9}, 20),
    ("StepLR", {"step_size": 1, "gamma": 0.7}, "Adam", {}, 12),
    ("CosineAnnealingLR", {"T_max": 7}, "SGD", {"momentum": 0.9}, 40),  # past T_max: rises and falls again
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": 0.01}, "AdamW", {}, 35),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 50}, "SGD", {"momentum": 0.9}, 50),
    ("OneCycleLR", {"max_lr": [1.0, 2.5], "epochs": 4, "steps_per_epoch": 9}, "Adam", {}, 36),
    (
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": 40, "three_phase": True, "anneal_strategy": "linear"},
        "AdamW",
        {},
        40,
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": 25, "pct_start": 0.5, "three_phase": True, "div_factor": 10.0},
        "RMSprop",
        {"momentum": 0.5},
        25,
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": 30, "cycle_momentum": False, "final_div_factor": 100.0},
        "RMSprop",
        {"momentum": 0.5},
        30,
    ),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 10, "pct_start": 0.0}, "SGD", {"momentum": 0.5}, 10),
]


@pytest.mark.parametrize(("name", "kwargs", "opt_name", "opt_kwargs", "steps"), SCHEDULE_CASES)
def test_lr_and_momentum_sequences_match_torch(name, kwargs, opt_name, opt_kwargs, steps):
    torch = pytest.importorskip("torch")
    params = two_groups()
    opt = make_optimizer(opt_name, params, **opt_kwargs)
    lrs, moms = trace(opt, getattr(sched, name)(opt, **kwargs), steps)

    tparams = [torch.zeros(p.shape, dtype=torch.float64, requires_grad=True) for p in params]
    topt = getattr(torch.optim, opt_name)(
        [{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.3}], lr=0.1, **opt_kwargs
    )
    tlrs, tmoms = trace(topt, getattr(torch.optim.lr_scheduler, name)(topt, **kwargs), steps)
    np.testing.assert_allclose(lrs, tlrs, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(moms, tmoms, rtol=1e-13)


@pytest.mark.parametrize(
    ("opt_name", "opt_kwargs"), [("SGD", {"momentum": 0.9, "nesterov": True}), ("AdamW", {}), ("RMSprop", {})]
)
def test_a_scheduled_training_trajectory_matches_torch(opt_name, opt_kwargs):
    # the parameters after 30 steps of a one-cycle schedule (rates and momenta both moving), float64
    torch = pytest.importorskip("torch")
    params = two_groups()
    start = [p.data.copy() for p in params]
    r = np.random.default_rng(1)
    grads = [[r.standard_normal(p.shape) for p in params] for _ in range(30)]
    opt = make_optimizer(opt_name, params, **opt_kwargs)
    schedule = sched.OneCycleLR(opt, max_lr=[0.05, 0.02], total_steps=30, three_phase=True)
    tparams = [torch.nn.Parameter(torch.from_numpy(s.copy())) for s in start]
    topt = getattr(torch.optim, opt_name)(
        [{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.3}], lr=0.1, **opt_kwargs
    )
    tschedule = torch.optim.lr_scheduler.OneCycleLR(
        topt, max_lr=[0.05, 0.02], total_steps=30, three_phase=True
    )
    for step_grads in grads:
        for p, tp, g in zip(params, tparams, step_grads, strict=True):
            p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        schedule.step()
        tschedule.step()
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-13)


# ---- torch-free: the closed forms, the phases, state dicts, errors ----------------------------------------
def test_step_lr_follows_its_closed_form_and_chains_hand_made_changes():
    opt = make_optimizer("SGD", two_groups())
    schedule = sched.StepLR(opt, step_size=4, gamma=0.5)
    lrs, _ = trace(opt, schedule, 12)
    t = np.arange(13)[:, None]
    np.testing.assert_allclose(lrs, np.array([[0.1, 0.3]]) * 0.5 ** (t // 4), rtol=1e-15)
    assert schedule.last_epoch == 12
    opt.param_groups[0]["lr"] = 1.0  # chainable: the next drop applies to the rate set by hand
    for _ in range(4):
        schedule.step()
    assert schedule.get_last_lr() == [0.5, 0.3 * 0.5**4]


def test_cosine_follows_its_closed_form_before_and_after_t_max():
    opt = make_optimizer("SGD", two_groups())
    lrs, _ = trace(opt, sched.CosineAnnealingLR(opt, T_max=8, eta_min=0.02), 24)
    t = np.arange(25)[:, None]
    expected = 0.02 + (np.array([[0.1, 0.3]]) - 0.02) * (1 + np.cos(np.pi * t / 8)) / 2
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    np.testing.assert_allclose(lrs[8], [0.02, 0.02])
    np.testing.assert_allclose(lrs[16], [0.1, 0.3])


def test_one_cycle_phases_reach_their_targets():
    opt = make_optimizer("SGD", two_groups(), momentum=0.9)
    # the rates of steps 0..99: warm-up ends at step pct_start * total_steps - 1 = 29, the last is step 99
    lrs, moms = trace(opt, sched.OneCycleLR(opt, max_lr=[1.0, 2.0], total_steps=100, pct_start=0.3), 99)
    np.testing.assert_allclose(lrs[0], [1.0 / 25, 2.0 / 25])
    np.testing.assert_allclose(lrs[29], [1.0, 2.0])
    np.testing.assert_allclose(lrs[99], [1.0 / 25 / 1e4, 2.0 / 25 / 1e4])
    assert (np.diff(lrs[:30, 0]) > 0).all()
    assert (np.diff(lrs[29:, 0]) < 0).all()
    # momentum mirrors the rate: max_momentum at the ends, base_momentum at the peak
    np.testing.assert_allclose(moms[[0, 29, 99]], [[0.95, 0.95], [0.85, 0.85], [0.95, 0.95]])
    assert [g["max_lr"] for g in opt.param_groups] == [1.0, 2.0]


def test_one_cycle_three_phase_comes_back_down_symmetrically_then_anneals():
    opt = make_optimizer("Adam", two_groups())
    settings = {"max_lr": 1.0, "total_steps": 41, "pct_start": 0.25, "anneal_strategy": "linear"}
    lrs, moms = trace(opt, sched.OneCycleLR(opt, **settings), 40)
    opt3 = make_optimizer("Adam", two_groups())
    lrs3, _ = trace(opt3, sched.OneCycleLR(opt3, three_phase=True, **settings), 40)
    # linear warm-up identical in both; three-phase is back at initial_lr at step 2 * (0.25 * 41) - 2
    np.testing.assert_allclose(lrs3[:10, 0], lrs[:10, 0], rtol=1e-14)
    np.testing.assert_allclose(
        lrs3[[0, 9, 18], 0], [0.04, 1.0 - 0.96 * 0.25 / 9.25, 0.04 + 0.96 * 0.5 / 9.25]
    )
    np.testing.assert_allclose(lrs3[-1, 0], 0.04 / 1e4)
    assert moms[0, 0] == 0.95  # Adam's beta1 is the cycled momentum
    assert opt3.param_groups[0]["betas"][1] == 0.999


def scheduled_run(make_schedule, steps, resume_at=None, load_optimizer_first=False):
    """Train ``steps`` steps (AdamW, fixed gradients); with ``resume_at``, rebuild optimizer and scheduler
    from their state dicts there, through JSON as a checkpoint stores them, as a restarted run would."""
    params = two_groups()
    r = np.random.default_rng(3)
    grads = [[r.standard_normal(p.shape) for p in params] for _ in range(steps)]
    opt = make_optimizer("AdamW", params)
    schedule = make_schedule(opt)
    lrs = [schedule.get_last_lr()]
    for k, step_grads in enumerate(grads):
        if k == resume_at:
            opt_state, schedule_state = opt.state_dict(), schedule.state_dict()
            schedule_state = json.loads(json.dumps(schedule_state))
            opt_state["param_groups"] = json.loads(json.dumps(opt_state["param_groups"]))
            opt = make_optimizer("AdamW", params)
            if load_optimizer_first:
                opt.load_state_dict(opt_state)
                schedule = make_schedule(opt)
            else:
                schedule = make_schedule(opt)
                opt.load_state_dict(opt_state)
            schedule.load_state_dict(schedule_state)
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.copy()
        opt.step()
        schedule.step()
        lrs.append(schedule.get_last_lr())
    return lrs, [p.data.copy() for p in params], [momenta(opt)]


RESUMABLE = [
    lambda opt: sched.StepLR(opt, step_size=3, gamma=0.5),
    lambda opt: sched.CosineAnnealingLR(opt, T_max=9, eta_min=1e-3),
    lambda opt: sched.OneCycleLR(opt, max_lr=0.05, total_steps=20),
    lambda opt: sched.OneCycleLR(opt, max_lr=[0.05, 0.1], epochs=4, steps_per_epoch=5, three_phase=True),
]


@pytest.mark.parametrize("load_optimizer_first", [False, True])
@pytest.mark.parametrize("make_schedule", RESUMABLE)
def test_resuming_from_state_dicts_continues_bit_for_bit(make_schedule, load_optimizer_first):
    straight = scheduled_run(make_schedule, 20)
    for resume_at in (1, 7, 13):
        resumed = scheduled_run(
            make_schedule, 20, resume_at=resume_at, load_optimizer_first=load_optimizer_first
        )
        assert resumed[0] == straight[0]
        for a, b in zip(resumed[1], straight[1], strict=True):
            np.testing.assert_array_equal(a, b)
        assert resumed[2] == straight[2]


def test_state_dict_is_plain_data_and_a_copy():
    opt = make_optimizer("SGD", two_groups(), momentum=0.9)
    schedule = sched.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    state = schedule.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["last_epoch"] == 0
    assert state["total_steps"] == 10
    assert "optimizer" not in state
    state["_phases"][0]["end_step"] = 99.0
    state["base_lrs"].append(1.0)
    assert schedule._phases[0]["end_step"] == 2.0
    assert len(schedule.base_lrs) == 2
    last = schedule.get_last_lr()
    last[0] = 123.0
    assert schedule.get_last_lr()[0] == pytest.approx(0.04, rel=1e-14)


def test_numpy_scalars_in_the_arguments_keep_the_state_json_ready():
    opt = optim.SGD(two_groups(), lr=np.float32(0.1), momentum=0.9)
    schedule = sched.OneCycleLR(
        opt, np.float32(1.0), np.int64(10), div_factor=np.float32(10), base_momentum=np.float32(0.8)
    )
    schedule.step()
    step_opt = optim.SGD(two_groups(), lr=np.float32(0.1))
    step = sched.StepLR(step_opt, step_size=np.int64(2), gamma=np.float32(0.5))
    step.step()
    for state in (schedule.state_dict(), step.state_dict()):
        assert json.loads(json.dumps(state)) == state
    for o in (opt, step_opt):  # the entries schedulers add to the groups go into a checkpoint's JSON too
        json.dumps(o.state_dict()["param_groups"])


def test_load_state_dict_rejects_another_schedulers_state():
    opt = make_optimizer("SGD", two_groups())
    step_state = sched.StepLR(opt, step_size=2).state_dict()
    cosine = sched.CosineAnnealingLR(make_optimizer("SGD", two_groups()), T_max=5)
    with pytest.raises(
        ValueError, match=r"CosineAnnealingLR.load_state_dict: unknown entries \['gamma', 'step_size'\]"
    ):
        cosine.load_state_dict(step_state)
    with pytest.raises(ValueError, match="base_lrs has 1 values, the optimizer 2 parameter groups"):
        cosine.load_state_dict({"base_lrs": [0.1]})
    with pytest.raises(ValueError, match="expected a dict, got list"):
        cosine.load_state_dict([1, 2])


def test_stepping_past_the_end_of_one_cycle_raises_and_changes_nothing():
    opt = make_optimizer("SGD", two_groups(), momentum=0.9)
    schedule = sched.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        schedule.step()
    before = (schedule.state_dict(), [dict(g) for g in opt.param_groups])
    with pytest.raises(ValueError, match="OneCycleLR: step 4 is past total_steps=3"):
        schedule.step()
    assert (schedule.state_dict(), [dict(g) for g in opt.param_groups]) == before


def test_continuing_with_last_epoch_needs_the_groups_entries():
    opt = make_optimizer("SGD", two_groups())
    with pytest.raises(
        ValueError, match=r"StepLR: last_epoch=4 continues a schedule, but .* lack \['initial_lr'\]"
    ):
        sched.StepLR(opt, step_size=2, last_epoch=4)
    with pytest.raises(
        ValueError, match=r"lack \['base_momentum', 'initial_lr', 'max_lr', 'max_momentum', 'min_lr'\]"
    ):
        sched.OneCycleLR(make_optimizer("SGD", two_groups()), max_lr=1.0, total_steps=9, last_epoch=2)
    # with the entries present (a restored optimizer), the schedule carries on from last_epoch
    sched.StepLR(opt, step_size=2)
    continued = sched.StepLR(opt, step_size=2, last_epoch=4)
    assert continued.last_epoch == 5
    assert continued.base_lrs == [0.1, 0.3]


class Plain(optim.Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    def step(self):
        pass


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda o: sched.StepLR(o, step_size=0), ValueError, "StepLR: step_size must be at least 1, got 0"),
        (lambda o: sched.StepLR(o, step_size=2.0), TypeError, r"StepLR: step_size must be an int, got 2.0"),
        (lambda o: sched.StepLR(o, step_size=2, gamma=-0.1), ValueError, "StepLR: invalid gamma -0.1"),
        (lambda o: sched.StepLR(o, 2, last_epoch=-2), ValueError, "StepLR: last_epoch must be at least -1"),
        (
            lambda o: sched.CosineAnnealingLR(o, T_max=0),
            ValueError,
            "CosineAnnealingLR: T_max must be at least 1",
        ),
        (
            lambda o: sched.CosineAnnealingLR(o, 5, eta_min=-1),
            ValueError,
            "CosineAnnealingLR: invalid eta_min -1",
        ),
        (
            lambda o: sched.OneCycleLR(o, max_lr=1.0),
            ValueError,
            "OneCycleLR: give total_steps, or both epochs and steps_per_epoch",
        ),
        (
            lambda o: sched.OneCycleLR(o, max_lr=1.0, epochs=3),
            ValueError,
            "epochs=3, steps_per_epoch=None",
        ),
        (
            lambda o: sched.OneCycleLR(o, 1.0, total_steps=0),
            ValueError,
            "OneCycleLR: total_steps must be at least 1, got 0",
        ),
        (
            lambda o: sched.OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=1.5),
            TypeError,
            "OneCycleLR: steps_per_epoch must be an int",
        ),
        (
            lambda o: sched.OneCycleLR(o, 1.0, total_steps=9, anneal_strategy="exp"),
            ValueError,
            "OneCycleLR: anneal_strategy must be 'cos' or 'linear', got 'exp'",
        ),
        (
            lambda o: sched.OneCycleLR(o, 1.0, total_steps=9, pct_start=1.5),
            ValueError,
            r"OneCycleLR: invalid pct_start 1.5; it must be a number in \[0, 1\]",
        ),
        (
            lambda o: sched.OneCycleLR(o, [1.0], total_steps=9),
            ValueError,
            "OneCycleLR: max_lr has 1 values, the optimizer 2 parameter groups",
        ),
        (lambda o: sched.OneCycleLR(o, -1.0, total_steps=9), ValueError, "OneCycleLR: invalid max_lr -1.0"),
        (
            lambda o: sched.OneCycleLR(o, 1.0, total_steps=9, div_factor=0),
            ValueError,
            "OneCycleLR: invalid div_factor 0; it must be a number > 0",
        ),
        (
            lambda o: sched.OneCycleLR(Plain(two_groups()), 1.0, total_steps=9),
            ValueError,
            "OneCycleLR: cycle_momentum needs an optimizer with momentum or betas, Plain has neither",
        ),
        (lambda o: sched.StepLR("sgd", step_size=1), TypeError, "StepLR: expected an Optimizer, got str"),
        (
            lambda o: sched.OneCycleLR(None, 1.0, 5),
            TypeError,
            "OneCycleLR: expected an Optimizer, got NoneType",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make(make_optimizer("SGD", two_groups(), momentum=0.9))


def test_one_cycle_without_momentum_cycling_works_on_any_optimizer():
    opt = Plain(two_groups())
    schedule = sched.OneCycleLR(
        opt, max_lr=1.0, total_steps=5, cycle_momentum=False, anneal_strategy="linear"
    )
    lrs = [schedule.get_last_lr()[0]]
    for _ in range(5):
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    np.testing.assert_allclose(lrs[0], 0.04)
    np.testing.assert_allclose(lrs[4], 0.04 / 1e4)  # step 4, the last of 5
    assert "momentum" not in opt.param_groups[0]


def test_a_changed_number_of_groups_is_an_error():
    opt = make_optimizer("SGD", two_groups())
    schedule = sched.StepLR(opt, step_size=1)
    opt.add_param_group({"params": [nn.Parameter(np.zeros(2))]})
    with pytest.raises(
        ValueError, match="StepLR: the optimizer has 3 parameter groups, the scheduler was built for 2"
    ):
        schedule.step()


# ---- create_scheduler: one scheduler per run, stepped after every batch ------------------------------------
def batch_lrs(name, epochs, steps_per_epoch, **options):
    opt = make_optimizer("SGD", two_groups(), momentum=0.9)
    schedule = sched.create_scheduler(name, opt, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])  # the rate this batch's optimizer.step() uses
        opt.step()
        schedule.step()
    return np.array(lrs).reshape(epochs, steps_per_epoch), schedule


def test_create_scheduler_step_drops_by_gamma_every_step_epochs_epochs():
    lrs, schedule = batch_lrs("step", epochs=8, steps_per_epoch=5)
    assert isinstance(schedule, sched.StepLR)
    # default: a drop every ceil(8 / 3) = 3 epochs, by 0.1; constant within an epoch
    np.testing.assert_allclose(lrs, 0.1 * 0.1 ** (np.arange(8) // 3)[:, None] * np.ones((1, 5)), rtol=1e-14)
    lrs, _ = batch_lrs("STEP", epochs=4, steps_per_epoch=3, step_epochs=1, gamma=0.5)
    np.testing.assert_allclose(lrs[:, 0], [0.1, 0.05, 0.025, 0.0125])


def test_create_scheduler_cosine_spans_the_whole_run():
    lrs, schedule = batch_lrs("cosine", epochs=3, steps_per_epoch=4, eta_min=0.001)
    assert isinstance(schedule, sched.CosineAnnealingLR)
    b = np.arange(12)
    np.testing.assert_allclose(lrs.ravel(), 0.001 + 0.099 * (1 + np.cos(np.pi * b / 12)) / 2, rtol=1e-12)
    np.testing.assert_allclose(schedule.get_last_lr(), [0.001, 0.001])  # after the last batch


def test_create_scheduler_onecycle_peaks_at_the_optimizers_rate():
    lrs, schedule = batch_lrs("onecycle", epochs=2, steps_per_epoch=10)
    assert isinstance(schedule, sched.OneCycleLR)
    assert schedule.total_steps == 20
    np.testing.assert_allclose(lrs.max(), 0.1)
    np.testing.assert_allclose(lrs[0, 0], 0.1 / 25)
    with pytest.raises(ValueError, match="past total_steps=20"):
        schedule.step()
    lrs, _ = batch_lrs("onecycle", epochs=2, steps_per_epoch=10, max_lr=0.5, pct_start=0.5, div_factor=5.0)
    np.testing.assert_allclose([lrs[0, 0], lrs.max()], [0.1, 0.5])


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        (
            ("warmup", 2, 3),
            {},
            ValueError,
            "create_scheduler: unknown schedule 'warmup'; choose one of step, cosine, onecycle",
        ),
        (
            ("cosine", 2, 3),
            {"gamma": 0.1},
            ValueError,
            "the 'cosine' schedule has no option gamma; it takes eta_min",
        ),
        (
            ("step", 2, 3),
            {"T_max": 4},
            ValueError,
            "'step' schedule has no option T_max; it takes step_epochs, gamma",
        ),
        (("step", 0, 3), {}, ValueError, "create_scheduler: epochs must be at least 1, got 0"),
        (("cosine", 2, 2.5), {}, TypeError, "create_scheduler: steps_per_epoch must be an int"),
        (("step", 2, 3), {"step_epochs": 0}, ValueError, "create_scheduler: step_epochs must be at least 1"),
        (("onecycle", 2, 3), {"anneal_strategy": "exp"}, ValueError, "OneCycleLR: anneal_strategy"),
    ],
)
def test_create_scheduler_rejects_bad_names_and_options(args, options, error, message):
    name, epochs, steps = args
    with pytest.raises(error, match=message):
        sched.create_scheduler(name, make_optimizer("SGD", two_groups()), epochs, steps, **options)
    assert sched.SCHEDULERS == ("step", "cosine", "onecycle")


def test_construction_sets_the_rate_of_step_zero_as_pytorch():
    # the construction step sets step 0's rate and counts as the first step, as PyTorch's
    opt = make_optimizer("SGD", two_groups())
    schedule = sched.CosineAnnealingLR(opt, T_max=3)
    assert (schedule.last_epoch, schedule._step_count) == (0, 1)
    assert schedule.get_last_lr() == [0.1, 0.3]
    assert opt.param_groups[0]["initial_lr"] == 0.1
    schedule.step()
    assert schedule.get_last_lr()[0] == pytest.approx(0.1 * (1 + math.cos(math.pi / 3)) / 2, rel=1e-15)
