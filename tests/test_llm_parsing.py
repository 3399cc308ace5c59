"""Reading coordinates out of language model answers (geoguess.llm.parsing)."""

from __future__ import annotations

import pytest

from geoguess.llm.parsing import AnswerError, parse_answer


@pytest.mark.parametrize(
    ("text", "lat", "lon"),
    [
        ('{"latitude": 48.8566, "longitude": 2.3522}', 48.8566, 2.3522),
        ('{"Latitude": "-33.87", "Longitude": "151.21"}', -33.87, 151.21),
        ('{"lat": 35.68, "lng": 139.69}', 35.68, 139.69),
        ('```json\n{"latitude": 40.7, "longitude": -74.0}\n```', 40.7, -74.0),
        ('Sure! Here it is: {"latitude": 51.5, "longitude": -0.12} Hope that helps.', 51.5, -0.12),
        ('{"answer": {"latitude": -22.9, "longitude": -43.2}}', -22.9, -43.2),
        ('[{"latitude": 1.29, "longitude": 103.85}]', 1.29, 103.85),
        ('{"latitude": "33.9° S", "longitude": "151.2° E"}', -33.9, 151.2),
    ],
)
def test_json_answers(text: str, lat: float, lon: float) -> None:
    a = parse_answer(text)
    assert (a.lat, a.lon) == pytest.approx((lat, lon))
    assert a.method == "json"


def test_json_keeps_place_and_reason() -> None:
    a = parse_answer(
        '{"latitude": 48.85, "longitude": 2.35, "place": "Paris, France", '
        '"reason": "Haussmann facades\\nand a Métro sign"}'
    )
    assert a.place == "Paris, France"
    assert a.reason == "Haussmann facades and a Métro sign"


@pytest.mark.parametrize(
    ("text", "lat", "lon"),
    [
        ("I think this is Paris, at 48.85° N, 2.35° E.", 48.85, 2.35),
        ("Sydney: 33.9°S 151.2°E", -33.9, 151.2),
        ("lat: -33.9, lon: 151.2", -33.9, 151.2),
        ("Latitude = 64.14, Longitude = -21.94 (Reykjavik)", 64.14, -21.94),
        ("The coordinates are (40.7128, -74.0060).", 40.7128, -74.006),
        ("48°51'24\"N 2°21'03\"E", 48.856667, 2.350833),
        ("Somewhere in Buenos Aires, 34.60 S, 58.38 W", -34.60, -58.38),
        ("latitude 10.5 N, longitude 66.9 W", 10.5, -66.9),
    ],
)
def test_prose_answers(text: str, lat: float, lon: float) -> None:
    a = parse_answer(text)
    assert (a.lat, a.lon) == pytest.approx((lat, lon), abs=1e-4)
    assert a.method == "text"
    assert a.reason  # the prose itself is kept as the reason


def test_prose_counts_are_not_coordinates() -> None:
    with pytest.raises(AnswerError, match="no coordinates"):
        parse_answer("I see 3 people, 2 cars and a dog in a park.")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        ("I cannot determine where this photo was taken.", "no coordinates"),
        ('{"latitude": 123.0, "longitude": 10.0}', "latitude 123"),
        ('{"latitude": 12.0, "longitude": 200.5}', "longitude 200.5"),
        ('{"latitude": 0, "longitude": 0}', "placeholder"),
        ('{"latitude": null, "longitude": null, "reason": "unknown"}', "no coordinates"),
        ('{"latitude": 45.0}', "only one"),
        ('{"latitude": "north-ish", "longitude": 3}', "not a number"),
        ('{"latitude": true, "longitude": 3}', "not a number"),
        ('{"latitude": NaN, "longitude": 3}', "not finite"),
        ("lat: 95.0, lon: 10.0", "latitude 95"),
    ],
)
def test_rejected_answers(text: str | None, problem: str) -> None:
    with pytest.raises(AnswerError, match=problem):
        parse_answer(text)


def test_never_zero_zero_from_garbage() -> None:
    for text in ["{}", "{broken json", "[]", "null", "```json\n```", "0, 0"]:
        try:
            a = parse_answer(text)
        except AnswerError:
            continue
        assert (a.lat, a.lon) != (0.0, 0.0), text


def test_long_reason_is_clipped() -> None:
    a = parse_answer('{"latitude": 1.5, "longitude": 2.5, "reason": "' + "x" * 5000 + '"}')
    assert a.reason is not None and len(a.reason) <= 500
