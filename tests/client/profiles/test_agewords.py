"""Ages in words: English and Russian plurals."""

from __future__ import annotations

import pytest

from forkwire.client.profiles.agewords import age_words


@pytest.mark.parametrize(
    ("years", "words"),
    [
        (1, "1 год"),
        (2, "2 года"),
        (4, "4 года"),
        (5, "5 лет"),
        (11, "11 лет"),
        (12, "12 лет"),
        (14, "14 лет"),
        (21, "21 год"),
        (22, "22 года"),
        (25, "25 лет"),
        (30, "30 лет"),
        (31, "31 год"),
        (33, "33 года"),
        (35, "35 лет"),
        (111, "111 лет"),
        (112, "112 лет"),
        (114, "114 лет"),
        (121, "121 год"),
    ],
)
def test_russian_plurals(years: int, words: str) -> None:
    """Russian ages take год / года / лет by the last two digits (11-14 are always лет)."""
    assert age_words(years, "ru_RU") == words


def test_english_plurals_and_bad_input() -> None:
    """English is "1 year", otherwise "N years"; unknown languages and negatives refuse."""
    assert age_words(1, "en_US") == "1 year"
    assert age_words(0, "en_US") == "0 years"
    assert age_words(33, "en_US") == "33 years"
    with pytest.raises(ValueError, match="locale"):
        age_words(3, "de_DE")
    with pytest.raises(ValueError, match=">= 0"):
        age_words(-1, "en_US")
