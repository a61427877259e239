"""The model queue's policy, as a pure function: interactive before background (which keeps a minimum share), then
resident model first, then arrival order, and a swap only once the resident model is no longer being asked for, or
once a job has waited out the minimum residency."""

from __future__ import annotations

from dataclasses import dataclass

from llava_edge.server.queue_policy import BACKGROUND_SHARE, Residency, next_job, wait_before_swap


@dataclass(frozen=True)
class Queued:
    name: str
    model: str
    arrived: float
    priority: str = "interactive"


RESIDENT = Residency("tiny", last_asked=100.0, min_residency=30.0)


def test_jobs_for_the_resident_model_go_first_then_arrival_order() -> None:
    queued = [Queued("swap", "small", 101.0), Queued("second", "tiny", 103.0), Queued("first", "tiny", 102.0)]

    assert next_job(queued, RESIDENT, now=104.0) == queued[2]
    assert next_job(queued[:2], RESIDENT, now=104.0) == queued[1]


def test_a_swap_waits_while_the_resident_model_was_asked_for_within_the_residency() -> None:
    swap = Queued("swap", "small", 110.0)

    assert next_job([swap], RESIDENT, now=129.9) is None
    assert wait_before_swap([swap], RESIDENT, now=129.9) == 100.0 + 30.0 - 129.9


def test_a_swap_is_taken_once_the_resident_model_is_idle_for_the_residency() -> None:
    swap = Queued("swap", "small", 125.0)

    assert next_job([swap], RESIDENT, now=130.0) == swap


def test_a_swap_is_taken_once_it_waited_the_residency_even_if_the_resident_is_still_asked_for() -> None:
    swap = Queued("swap", "small", 110.0)
    busy = Residency("tiny", last_asked=139.0, min_residency=30.0)

    assert next_job([swap], busy, now=139.9) is None
    assert next_job([swap], busy, now=140.0) == swap


def test_a_resident_nobody_asked_for_is_swapped_out_at_once() -> None:
    never = Residency("tiny", last_asked=float("-inf"), min_residency=30.0)

    assert next_job([Queued("swap", "small", 5.0)], never, now=5.0) is not None
    assert next_job([], never, now=5.0) is None and wait_before_swap([], never, now=5.0) is None


def test_alternating_requests_swap_at_most_once_per_residency() -> None:
    """A client alternating two models one request at a time: each taken job asks for its model again, so over
    120 s of back-to-back requests the policy swaps at most 120 / 30 + 1 times (not once per request)."""
    residency, now, swaps, served = Residency("tiny", float("-inf"), 30.0), 0.0, 0, 0
    waiting = [Queued("a", "small", 0.0), Queued("b", "tiny", 0.0)]
    while now < 120.0:
        job = next_job(waiting, residency, now)
        if job is None:
            now += 1.0
            continue
        waiting.remove(job)
        swaps += job.model != residency.model
        residency = Residency(job.model, now, residency.min_residency)
        served += 1
        waiting.append(Queued(f"again-{served}", job.model, now))  # the same client asks again at once
        now += 0.5
    assert served > 100 and swaps <= 5


def test_interactive_jobs_go_before_older_background_ones() -> None:
    batch = Queued("batch", "tiny", 101.0, "background")
    person = Queued("person", "tiny", 105.0)

    assert next_job([batch, person], RESIDENT, now=106.0) == person
    assert next_job([batch], RESIDENT, now=106.0) == batch


def test_background_work_gets_its_share_after_a_run_of_interactive_jobs() -> None:
    batch = Queued("batch", "tiny", 101.0, "background")
    person = Queued("person", "tiny", 105.0)

    assert next_job([batch, person], RESIDENT, now=106.0, streak=BACKGROUND_SHARE - 1) == person
    assert next_job([batch, person], RESIDENT, now=106.0, streak=BACKGROUND_SHARE) == batch


def test_a_resident_background_job_runs_while_an_interactive_swap_waits_its_turn() -> None:
    swap = Queued("swap", "small", 110.0)
    batch = Queued("batch", "tiny", 101.0, "background")

    assert next_job([swap, batch], RESIDENT, now=111.0) == batch
