"""Selection: best accuracy within latency and memory budgets, hysteresis, EWMA, CPU load."""
import pytest

from edge_runtime.monitor import Signals
from edge_runtime.policy import (BudgetPolicy, Candidate, Context, FixedPolicy, LatencyEstimator,
                                 contention, make_policy, pick_threads_key)

# accuracy / expected ms like the fixture portfolio at 1 thread
CANDS = [Candidate("dense", 0.991, 2.40, 1.0), Candidate("l2", 0.986, 1.60, 0.8),
         Candidate("l4", 0.974, 0.90, 0.6), Candidate("int8", 0.968, 0.55, 0.3)]


def choose(budget, current=None, cands=CANDS, **ctx):
    return BudgetPolicy(hysteresis=0.1, min_dwell_s=0.5).choose(
        cands, current, Context(latency_budget_ms=budget, **ctx)).variant_id


@pytest.mark.parametrize("budget,want", [
    (None, "dense"), (10.0, "dense"), (2.7, "dense"), (2.0, "l2"), (1.2, "l4"), (0.9, "int8"),
    (0.1, "int8"),   # nothing fits: the fastest
])
def test_best_accuracy_within_the_budget(budget, want):
    assert choose(budget) == want


def test_memory_budget_and_free_memory_exclude_variants():
    assert choose(None, memory_budget_mb=0.9) == "l2"
    assert choose(None, memory_budget_mb=0.1) == "int8"        # nothing fits: smallest
    free = Signals(2, 0.0, None, mem_available_mb=32.0 + 0.7, rss_mb=None)
    assert choose(None, signals=free) == "l4"                   # must leave the 32 MiB reserve
    loaded = [Candidate("dense", 0.991, 2.4, 1.0, loaded=True)] + CANDS[1:]
    assert choose(None, cands=loaded, signals=free) == "dense"  # already in memory: no new cost


def test_unavailable_and_unknown_latency():
    cands = [Candidate("dense", 0.991, 2.4, 1.0, available=False), CANDS[1],
             Candidate("nolat", 0.999, None, 0.5)]
    assert choose(None, cands=cands) == "nolat"       # no budget: accuracy only
    assert choose(2.0, cands=cands) == "l2"           # unknown latency never 'fits' a budget


def test_hysteresis_keeps_the_active_variant_near_the_budget():
    # l2 (1.6 ms) is active; budget wobbles around it: stays within +-10 % -> no switch.
    for budget in (1.50, 1.46, 1.70, 1.55):
        assert choose(budget, current="l2") == "l2"
    assert choose(1.40, current="l2") == "l4"          # 1.6 > 1.4 * 1.1: over budget, leave now
    # coming back up: 1.6 must fit budget * 0.9 before l2 is entered again
    assert choose(1.70, current="l4", budget_changed=True) == "l4"
    assert choose(1.80, current="l4", budget_changed=True) == "l2"


def test_upgrades_wait_for_the_dwell_time_downgrades_do_not():
    kw = dict(budget_changed=False)
    assert choose(5.0, current="l4", since_switch_s=0.1, **kw) == "l4"
    assert choose(5.0, current="l4", since_switch_s=0.6, **kw) == "dense"
    assert choose(5.0, current="l4", since_switch_s=0.1, budget_changed=True) == "dense"
    assert choose(1.0, current="dense", since_switch_s=0.0, **kw) == "l4"


def test_no_flapping_under_noisy_latency():
    """Expected latency of the active variant jitters +-8 % around the budget: few switches."""
    import random
    rng = random.Random(0)
    pol = BudgetPolicy(hysteresis=0.1, min_dwell_s=0.0)
    current, switches = "l2", 0
    for _ in range(500):
        noisy = [Candidate(c.id, c.accuracy, c.expected_ms * rng.uniform(0.92, 1.08), c.memory_mb)
                 for c in CANDS]
        got = pol.choose(noisy, current, Context(latency_budget_ms=1.6)).variant_id
        switches += got != current
        current = got
    assert switches == 0 and current == "l2"


def test_fixed_policy_never_moves():
    pol = make_policy("fixed")
    assert isinstance(pol, FixedPolicy) and not pol.automatic
    assert pol.choose(CANDS, "l4", Context(latency_budget_ms=0.1)).variant_id == "l4"
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        make_policy("fastest")


def test_contention_factor():
    assert contention(None, 2, 1) == 1.0 and contention(0.0, 4, 4) == 1.0
    assert contention(0.5, 2, 1) == 1.0          # one core still free for one thread
    assert contention(0.5, 2, 2) == 2.0          # two threads on one free core
    assert contention(0.9, 2, 1) == pytest.approx(1 / 0.25)   # floor of a quarter core
    assert contention(1.0, 4, 2) == 8.0


def test_pick_threads_key():
    assert pick_threads_key({"1": 1, "4": 1}, 4) == "4"
    assert pick_threads_key({"1": 1, "4": 1}, 3) == "4"
    assert pick_threads_key({"1": 1, "4": 1}, 2) == "1"
    assert pick_threads_key({}, 2) is None


def test_estimator_learns_from_measurements():
    est = LatencyEstimator({"a": 2.0, "b": 1.0}, alpha=0.5, min_samples=3, stale_s=10)
    assert est.expected_ms("a", now=0) == 2.0
    for t in range(3):
        est.observe("a", 4.0, now=t)                 # device is 2x slower than calibrated
    assert est.expected_ms("a", now=3) == pytest.approx(4.0)
    assert est.expected_ms("b", now=3) == pytest.approx(2.0)   # speed ratio carries over
    assert est.expected_ms("b", factor=3.0, now=3) == pytest.approx(6.0)
    assert est.expected_ms("b", now=100) == 1.0      # stale: back to the calibration
    # a measurement taken under contention 2 counts as half that when idle
    est.observe("b", 3.0, contention_now=2.0, now=200)
    assert est.ewma("b") == pytest.approx(1.5)
    frozen = LatencyEstimator({"a": 2.0}, learn=False)
    frozen.observe("a", 50.0)
    assert frozen.expected_ms("a") == 2.0


# ------------------------------------------------------------------------------ end to end
def test_switcher_follows_the_application_budget(make_switcher, ref_inputs):
    sw = make_switcher(learn=False)                  # expectations = manifest numbers @1 thread
    served = []
    for budget in (None, 2.0, 1.2, 0.8, 0.2, None):
        sw.set_budget(budget)
        served.append(sw.predict(ref_inputs[0], return_variant=True)[1])
    assert served == ["L00-dense-fp32", "L02-pruned-fp32", "L04-pruned-fp32",
                      "L04-pruned-int8", "L04-pruned-int8", "L00-dense-fp32"]
    with pytest.raises(ValueError, match="latency budget must be > 0"):
        sw.set_budget(0)


def test_switcher_backs_off_under_cpu_load(make_switcher, ref_inputs):
    from edge_runtime.monitor import StaticMonitor
    mon = StaticMonitor(cpu_busy_other=0.0, cpu_count_=2)
    # a dwell time no machine reaches between two calls (under emulation 0.5 s can pass)
    sw = make_switcher(learn=False, monitor=mon, latency_budget_ms=3.0, decision_interval_s=0,
                       policy=BudgetPolicy(min_dwell_s=600.0))
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L00-dense-fp32"
    mon.set(cpu_busy_other=0.85)                    # factor 1/0.3 = 3.33: only int8 (1.83) fits
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L04-pruned-int8"
    assert sw.stats()["contention"] == pytest.approx(3.333, abs=1e-3)
    mon.set(cpu_busy_other=0.0)
    # the upgrade back waits for the dwell time (no budget change) ...
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L04-pruned-int8"
    sw._last_switch -= 601.0                         # ... which has now passed
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L00-dense-fp32"


def test_switcher_downgrades_when_measured_latency_grows(make_switcher, ref_inputs):
    sw = make_switcher(latency_budget_ms=3.0, decision_interval_s=0)   # learning on
    assert sw.active == "L00-dense-fp32"
    for _ in range(5):                               # the dense model turns out to take 6 ms here
        sw.estimator.observe("L00-dense-fp32", 6.0)
    y, vid = sw.predict(ref_inputs[0], return_variant=True)
    # speed ratio 2.5 applies to the others too: 1.6*2.5 = 4 > 2.7, 0.9*2.5 = 2.25 fits
    assert vid == "L04-pruned-fp32"
    assert sw.stats()["decisions"]["last"].startswith("most accurate that fits")


def test_policy_runs_at_most_every_decision_interval_but_sees_budget_changes(make_switcher,
                                                                            ref_inputs):
    sw = make_switcher(learn=False, decision_interval_s=60.0)
    n0 = sw.stats()["decisions"]["count"]
    for _ in range(20):
        sw.predict(ref_inputs[0])
    assert sw.stats()["decisions"]["count"] - n0 <= 1           # not once per call
    sw.set_budget(0.2)                                           # ... but a budget change is
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L04-pruned-int8"
    assert sw.stats()["decisions"]["count"] - n0 <= 2
