"""Ages in words: ``33 years``, ``1 year``; ``21 год``, ``22 года``, ``25 лет``."""

from __future__ import annotations


def age_words(years: int, locale: str) -> str:
    """``years`` followed by the word for "years" in ``locale``'s language, rightly plural.

    Russian follows the CLDR plural categories: *one* for 1, 21, 31, ... but not 11
    (``год``), *few* for 2-4, 22-24, ... but not 12-14 (``года``), *many* for the rest
    (``лет``). English has *one* for 1 only.

    Args:
        years: a whole number of years, >= 0.
        locale: ``en_US``, ``ru_RU``, or any locale of those two languages (``ru``,
            ``en_GB``).

    Raises:
        ValueError: a negative age, or a language without rules here.
    """
    if years < 0:
        raise ValueError(f"an age is >= 0, got {years}")
    language = locale.replace("-", "_").split("_")[0].lower()
    if language == "ru":
        if years % 10 == 1 and years % 100 != 11:
            word = "год"
        elif 2 <= years % 10 <= 4 and not 12 <= years % 100 <= 14:
            word = "года"
        else:
            word = "лет"
    elif language == "en":
        word = "year" if years == 1 else "years"
    else:
        raise ValueError(f"no age words for locale {locale!r} (en_*, ru_*)")
    return f"{years} {word}"
