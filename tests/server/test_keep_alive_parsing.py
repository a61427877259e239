"""Keep-alive values read as Ollama reads them, and the timer a request sets."""

from __future__ import annotations

import math

import pytest

from llava_edge.errors import InvalidRequestError
from llava_edge.server.keep_alive import FOREVER, IdleClock, parse_keep_alive, timer_for


@pytest.mark.parametrize(("value", "seconds"), [
    (300, 300.0), (0.5, 0.5), (0, 0.0), ("0", 0.0), ("300", 300.0), ("2.5", 2.5), ("5m", 300.0),
    ("1h30m", 5400.0), ("300ms", 0.3), ("1.5h", 5400.0), ("10s", 10.0), ("1m30s", 90.0), ("500us", 0.0005),
    ("0s", 0.0), (" 5m ", 300.0),
])
def test_numbers_numeric_strings_and_go_durations_are_seconds(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, -0.5, "-1", "-1s", "-5m", "-1h30m"])
def test_any_negative_value_means_forever(value: object) -> None:
    assert parse_keep_alive(value) == FOREVER


@pytest.mark.parametrize("value", ["", "5 minutes", "5x", "m", "1h-30m", "h1", True, None, [], {}, "nan",
                                   float("nan"), "5m5"])
def test_anything_else_is_refused_with_the_forms_that_work(value: object) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_keep_alive(value, parameter="keepAlive")
    assert refused.value.parameter == "keepAlive" and '"5m"' in refused.value.message


def test_a_request_sets_the_timer_capped_by_the_operator() -> None:
    assert timer_for(None, 300.0, None) == 300.0  # the server's --keep-alive
    assert timer_for(10.0, 300.0, None) == 10.0  # the request's own, shorter or longer
    assert timer_for(FOREVER, 300.0, None) == FOREVER
    assert timer_for(FOREVER, 300.0, 600.0) == 600.0  # --max-keep-alive caps it
    assert timer_for(None, FOREVER, 60.0) == 60.0
    assert timer_for(0.0, 300.0, 60.0) == 0.0


def test_the_clock_expires_at_once_for_zero_and_never_for_forever() -> None:
    clock = IdleClock(0.0)
    assert clock.expired()
    clock.restart(FOREVER)
    assert not clock.expired() and clock.expires_at() > "2300"
    clock.restart(3600.0)
    assert not clock.expired() and clock.expires_at().endswith("Z") and not math.isinf(clock.seconds)
