"""A synthetic profile source: randomuser.me 1.4 records made from a seed, with no network.

The records copy the API's shape, key order and per-country quirks (``tests/fixtures/randomuser``):
postcodes that are ints or strings, null ids for IR, NZ, TR and UA, string coordinates, the API's
timezone list, Persian script for IR, junk HETU ids for FI, credentials included. The value
*distributions* follow the API's generator (RandomAPI/Randomuser.me-Node, ``api/1.4``): uniform
nationality, gender 50/50, dates drawn from the same fixed ranges, ages at generation time.

Speed comes from doing the slow part once: Faker fills per-nationality pools of names, streets, cities
and states (seed-independent, cached for the process), and each profile is then assembled from the pools
with the source's own ``random.Random``. Only ages depend on the clock, so a seed gives the same dates,
names and ids on every run; pass ``now`` to pin the ages too.
"""

# Turkish names are written with the dotless i (U+0131), which RUF001 takes for a confusable "i".
# ruff: noqa: RUF001

from __future__ import annotations

import hashlib
import itertools
import random
import re
import string
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from operator import methodcaller
from typing import Any, TypeVar

from faker import Faker
from faker.decode import unidecode

from core.profile import Source
from core.schema import NATIONALITIES
from ingestion.sources import check_batch_size, check_nationalities

# The API draws dates against a fixed instant (its ``constantTime``, 2022-05-23), not the clock.
_API_NOW_MS = 1_653_344_189_000
_DOB_RANGE_MS = (-800_000_000_000, _API_NOW_MS - 86_400_000 * 365 * 21)
"""Dates of birth: 1944-08-25 to 2001-05-28, as the API draws them."""
_REGISTERED_RANGE_MS = (1_016_688_461_000, _API_NOW_MS)
"""Registration dates: 2002-03-21 to 2022-05-23, as the API draws them."""
_DOB_SPAN_MS = _DOB_RANGE_MS[1] - _DOB_RANGE_MS[0] + 1
_REGISTERED_SPAN_MS = _REGISTERED_RANGE_MS[1] - _REGISTERED_RANGE_MS[0] + 1
_EARLIEST_NOW = datetime.fromtimestamp(_API_NOW_MS / 1000, UTC)
"""The earliest ``now`` at which every generated age is non-negative."""
_EPOCH = datetime(1970, 1, 1)

_POOL_SEED = 20_240_401
"""Faker's seed for the pools: fixed, so pools are identical in every process whatever the source seed."""
_POOL_DRAWS = 300
"""Faker calls per pool; duplicates are dropped, so small locale lists end up shorter."""

TIMEZONES: tuple[tuple[str, str], ...] = (
    ("-12:00", "Eniwetok, Kwajalein"),
    ("-11:00", "Midway Island, Samoa"),
    ("-10:00", "Hawaii"),
    ("-9:00", "Alaska"),
    ("-8:00", "Pacific Time (US & Canada)"),
    ("-7:00", "Mountain Time (US & Canada)"),
    ("-6:00", "Central Time (US & Canada), Mexico City"),
    ("-5:00", "Eastern Time (US & Canada), Bogota, Lima"),
    ("-4:00", "Atlantic Time (Canada), Caracas, La Paz"),
    ("-3:30", "Newfoundland"),
    ("-3:00", "Brazil, Buenos Aires, Georgetown"),
    ("-2:00", "Mid-Atlantic"),
    ("-1:00", "Azores, Cape Verde Islands"),
    ("0:00", "Western Europe Time, London, Lisbon, Casablanca"),
    ("+1:00", "Brussels, Copenhagen, Madrid, Paris"),
    ("+2:00", "Kaliningrad, South Africa"),
    ("+3:00", "Baghdad, Riyadh, Moscow, St. Petersburg"),
    ("+3:30", "Tehran"),
    ("+4:00", "Abu Dhabi, Muscat, Baku, Tbilisi"),
    ("+4:30", "Kabul"),
    ("+5:00", "Ekaterinburg, Islamabad, Karachi, Tashkent"),
    ("+5:30", "Bombay, Calcutta, Madras, New Delhi"),
    ("+5:45", "Kathmandu"),
    ("+6:00", "Almaty, Dhaka, Colombo"),
    ("+7:00", "Bangkok, Hanoi, Jakarta"),
    ("+8:00", "Beijing, Perth, Singapore, Hong Kong"),
    ("+9:00", "Tokyo, Seoul, Osaka, Sapporo, Yakutsk"),
    ("+9:30", "Adelaide, Darwin"),
    ("+10:00", "Eastern Australia, Guam, Vladivostok"),
    ("+11:00", "Magadan, Solomon Islands, New Caledonia"),
)
"""The (offset, description) pairs seen in the recorded 1.4 responses; the API ignores nationality here."""

_FEMALE_TITLES = ("Miss", "Mrs", "Ms")
_USERNAME_ADJECTIVES = (
    "angry", "beautiful", "big", "black", "blue", "brown", "crazy", "golden", "green", "happy", "heavy",
    "lazy", "orange", "organic", "purple", "red", "sad", "silver", "small", "ticklish", "tiny", "white",
    "yellow",
)  # fmt: skip
_USERNAME_ANIMALS = (
    "bear", "bird", "butterfly", "cat", "dog", "duck", "elephant", "fish", "frog", "goose", "gorilla",
    "koala", "ladybug", "leopard", "lion", "meercat", "mouse", "ostrich", "panda", "peacock", "rabbit",
    "snake", "swan", "tiger", "wolf", "zebra",
)  # fmt: skip
_SALT_CHARS = string.ascii_letters + string.digits

# Faker 40 lacks these lists (no sr_RS locale, no address data for tr_TR, no regions for no_NO and
# en_NZ), so they are written out here.
_NO_COUNTIES = (
    "Akershus", "Aust-Agder", "Buskerud", "Finnmark - Finnmárku", "Hedmark", "Hordaland", "Møre og Romsdal",
    "Nord-Trøndelag", "Nordland", "Oppland", "Oslo", "Rogaland", "Sogn og Fjordane", "Sør-Trøndelag",
    "Telemark", "Troms - Romsa", "Vest-Agder", "Vestfold", "Østfold",
)  # fmt: skip
_NZ_REGIONS = (
    "Auckland", "Bay of Plenty", "Canterbury", "Gisborne", "Hawke's Bay", "Manawatu-Wanganui",
    "Marlborough", "Nelson", "Northland", "Otago", "Southland", "Taranaki", "Tasman", "Waikato",
    "Wellington", "West Coast",
)  # fmt: skip
_RS_DISTRICTS = (
    "Belgrade", "Bor", "Braničevo", "Central Banat", "Jablanica", "Kolubara", "Mačva", "Moravica",
    "Nišava", "North Bačka", "North Banat", "Pčinja", "Pirot", "Podunavlje", "Pomoravlje", "Rasina",
    "Raška", "South Bačka", "South Banat", "Srem", "Šumadija", "Toplica", "West Bačka", "Zaječar",
    "Zlatibor",
)  # fmt: skip
_RS_CITIES = (
    "Aranđelovac", "Belgrade", "Bor", "Čačak", "Inđija", "Jagodina", "Kikinda", "Kovačica", "Kragujevac",
    "Kraljevo", "Kruševac", "Leskovac", "Loznica", "Niš", "Novi Pazar", "Novi Sad", "Pančevo",
    "Petrovac na Mlavi", "Pirot", "Požarevac", "Prokuplje", "Šabac", "Sečanj", "Sjenica", "Smederevo",
    "Sombor", "Sremska Mitrovica", "Subotica", "Užice", "Valjevo", "Vranje", "Vršac", "Zaječar",
    "Zrenjanin", "Zvečan",
)  # fmt: skip
_TR_PROVINCES = (
    "Adana", "Adıyaman", "Afyonkarahisar", "Ağrı", "Aksaray", "Amasya", "Ankara", "Antalya", "Ardahan",
    "Artvin", "Aydın", "Balıkesir", "Bartın", "Batman", "Bayburt", "Bilecik", "Bingöl", "Bitlis", "Bolu",
    "Burdur", "Bursa", "Çanakkale", "Çankırı", "Çorum", "Denizli", "Diyarbakır", "Düzce", "Edirne",
    "Elazığ", "Erzincan", "Erzurum", "Eskişehir", "Gaziantep", "Giresun", "Gümüşhane", "Hakkâri", "Hatay",
    "Iğdır", "Isparta", "İstanbul", "İzmir", "Kahramanmaraş", "Karabük", "Karaman", "Kars", "Kastamonu",
    "Kayseri", "Kırıkkale", "Kırklareli", "Kırşehir", "Kilis", "Kocaeli", "Konya", "Kütahya", "Malatya",
    "Manisa", "Mardin", "Mersin", "Muğla", "Muş", "Nevşehir", "Niğde", "Ordu", "Osmaniye", "Rize",
    "Sakarya", "Samsun", "Şanlıurfa", "Siirt", "Sinop", "Şırnak", "Sivas", "Tekirdağ", "Tokat", "Trabzon",
    "Tunceli", "Uşak", "Van", "Yalova", "Yozgat", "Zonguldak",
)  # fmt: skip


_Rand = Callable[[], float]
"""A source's ``random.Random().random``: every draw goes through it."""
_LETTERS = string.ascii_uppercase
_T = TypeVar("_T")


def _below(rand: _Rand, n: int) -> int:
    """A random int in ``[0, n)``; ``int(random() * n)`` is several times faster than ``randrange`` and
    its bias is negligible for the ``n`` used here (all far below 2**53)."""
    return int(rand() * n)


def _pick(rand: _Rand, values: Sequence[_T]) -> _T:
    """A random element of ``values``."""
    return values[int(rand() * len(values))]


class _Template:
    """A random string in a fixed format: ``#`` a digit, ``@`` a capital letter, anything else literal."""

    __slots__ = ("_digits_only", "_format", "_runs")

    def __init__(self, pattern: str) -> None:
        parts: list[str] = []
        runs: list[int] = []  # 10**n for a run of n digits, -n for a run of n letters
        for char, group in itertools.groupby(pattern):
            length = len(list(group))
            if char == "#":
                parts.append(f"%0{length}d")
                runs.append(10**length)
            elif char == "@":
                parts.append("%s")
                runs.append(-length)
            else:
                parts.append((char * length).replace("%", "%%"))
        self._format = "".join(parts)
        self._runs = tuple(runs)
        self._digits_only = all(run > 0 for run in runs)

    def __call__(self, rand: _Rand) -> str:
        """A new random string in this format."""
        if self._digits_only:  # the common case, kept to one list comprehension for speed
            return self._format % tuple([int(rand() * run) for run in self._runs])
        return self._format % tuple(
            int(rand() * run) if run > 0 else "".join([_pick(rand, _LETTERS) for _ in range(-run)])
            for run in self._runs
        )


def _templates(*patterns: str) -> tuple[_Template, ...]:
    """Compiled templates, one of which is picked per value."""
    return tuple(_Template(pattern) for pattern in patterns)


_IdValue = Callable[[_Rand, bool, str, datetime], str]
"""An id value from chance, the gender (male or not), the last name and the date of birth."""
_Postcode = Callable[[_Rand], int | str]


def _number(low: int, high: int) -> _Postcode:
    """Int postcodes from ``low`` to ``high`` inclusive."""
    return lambda rand: low + _below(rand, high - low + 1)


def _formatted(pattern: str) -> _IdValue:
    """Id values in a fixed format that depends on nothing but chance."""
    template = _Template(pattern)
    return lambda rand, _male, _last, _born: template(rand)


def _svnr(rand: _Rand, _male: bool, last: str, born: datetime) -> str:
    """German pension insurance number: area, birth date, initial of the last name, serial."""
    initial = (unidecode(last[:1]) or "X")[:1].upper()
    return f"{_below(rand, 100):02d} {born:%d%m%y} {initial} {_below(rand, 1000):03d}"


def _cpr(rand: _Rand, _male: bool, _last: str, born: datetime) -> str:
    """Danish CPR number: birth date, dash, four digits."""
    return f"{born:%d%m%y}-{_below(rand, 10000):04d}"


def _fodselsnummer(rand: _Rand, _male: bool, _last: str, born: datetime) -> str:
    """Norwegian national identity number: birth date and five digits."""
    return f"{born:%d%m%y}{_below(rand, 100000):05d}"


def _insee(rand: _Rand, male: bool, _last: str, born: datetime) -> str:
    """French INSEE number: sex, birth year and month, eight digits, a mod-97 key."""
    number = f"{1 if male else 2}{born:%y%m}{_below(rand, 10**8):08d}"
    return f"{number} {97 - int(number) % 97:02d}"


def _sin(rand: _Rand, _male: bool, _last: str, _born: datetime) -> str:
    """Canadian social insurance number: eight digits and a Luhn check digit, as the API makes them."""
    digits = [int(d) for d in f"{_below(rand, 10**8):08d}"]
    total = sum(d if i % 2 == 0 else (2 * d if d < 5 else 2 * d - 9) for i, d in enumerate(digits))
    return "".join(map(str, digits)) + str(-total % 10)


@dataclass(frozen=True)
class _Country:
    """Everything about one nationality that is fixed by the API's format, not drawn from Faker."""

    country: str
    locales: tuple[str, ...]
    postcode: _Postcode
    phone: tuple[_Template, ...]
    cell: tuple[_Template, ...]
    id_name: str = ""
    id_value: _IdValue | None = None
    """None for the nationalities whose id the API leaves null (IR, NZ, TR, UA)."""
    male_title: str = "Mr"
    female_titles: tuple[str, ...] = _FEMALE_TITLES
    postcodes_from_faker: bool = False
    """GB: postcodes are drawn from a Faker pool (real formats) instead of ``postcode``."""


_DEFAULT_POSTCODE = _number(10000, 99999)
_CH_NUMBERS = tuple(f"07{digit} ### ## ##" for digit in "56789")

_COUNTRIES: dict[str, _Country] = {
    "AU": _Country(
        "Australia", ("en_AU",), _number(200, 9999),
        _templates("0#-####-####"), _templates("04##-###-###"), "TFN", _formatted("#########"),
    ),
    "BR": _Country(
        "Brazil", ("pt_BR",), _DEFAULT_POSTCODE,
        _templates("(##) ####-####"), _templates("(##) ####-####"), "CPF", _formatted("###.###.###-##"),
    ),
    "CA": _Country(
        "Canada", ("en_CA",), _Template("@#@ #@#"),
        _templates("@## @##-####"), _templates("@## @##-####"), "SIN", _sin,
    ),
    "CH": _Country(
        "Switzerland", ("de_CH", "fr_CH"), _number(1000, 9999),
        _templates(*_CH_NUMBERS), _templates(*_CH_NUMBERS),
        "AVS", _formatted("756.####.####.##"),
        # The API titles every Swiss user in French, whatever the name's language.
        male_title="Monsieur", female_titles=("Madame", "Mademoiselle"),
    ),
    "DE": _Country(
        "Germany", ("de_DE",), _DEFAULT_POSTCODE,
        _templates("0###-#######"), _templates("017#-#######"), "SVNR", _svnr,
    ),
    "DK": _Country(
        "Denmark", ("da_DK",), _DEFAULT_POSTCODE, _templates("########"), _templates("########"), "CPR", _cpr,
    ),
    "ES": _Country(
        "Spain", ("es_ES",), _DEFAULT_POSTCODE,
        _templates("9##-###-###"), _templates("6##-###-###"), "DNI", _formatted("########-@"),
    ),
    "FI": _Country(
        "Finland", ("fi_FI",), _DEFAULT_POSTCODE,
        # The API's HETU generator is broken and really sends values like "NaNNA229undefined".
        _templates("0#-###-###"), _templates("04#-###-##-##"), "HETU", _formatted("NaNNA###undefined"),
    ),
    "FR": _Country(
        "France", ("fr_FR",), _DEFAULT_POSTCODE,
        _templates(*(f"0{d}-##-##-##-##" for d in "12345")), _templates("06-##-##-##-##"), "INSEE", _insee,
    ),
    "GB": _Country(
        "United Kingdom", ("en_GB",), _DEFAULT_POSTCODE,
        _templates("01### #####", "01#### #####", "0## #### ####"), _templates("07### ######"),
        "NINO", _formatted("@@ ## ## ## @"), postcodes_from_faker=True,
    ),
    "IE": _Country(
        "Ireland", ("en_IE",), _DEFAULT_POSTCODE,
        _templates("0#1-###-####"), _templates("081-###-####"), "PPS", _formatted("#######T"),
    ),
    "IN": _Country(
        "India", ("en_IN",), _DEFAULT_POSTCODE,
        _templates("9#########"), _templates("9#########"), "UIDAI", _formatted("############"),
    ),
    "IR": _Country(
        "Iran", ("fa_IR",), _DEFAULT_POSTCODE, _templates("0##-########"), _templates("09##-###-####"),
    ),
    "MX": _Country(
        "Mexico", ("es_MX",), _DEFAULT_POSTCODE,
        _templates("(6##) ### ####"), _templates("(6##) ### ####"), "NSS", _formatted("## ## ## #### #"),
    ),
    "NL": _Country(
        "Netherlands", ("nl_NL",), _Template("#### @@"),
        _templates("(0###) ######", "(0##) #######"), _templates("(06) ########"),
        "BSN", _formatted("########"),
    ),
    "NO": _Country(
        # Four-digit strings: Norwegian postcodes keep their leading zeros ("0278").
        "Norway", ("no_NO",), _Template("####"),
        _templates("########"), _templates("########"), "FN", _fodselsnummer,
    ),
    "NZ": _Country(
        "New Zealand", ("en_NZ",), _DEFAULT_POSTCODE,
        _templates("(###)-###-####"), _templates("(###)-###-####"),
    ),
    "RS": _Country(
        # Faker has no Serbian locale; Croatian names and streets are the same Latin Serbo-Croatian.
        "Serbia", ("hr_HR",), _DEFAULT_POSTCODE,
        _templates("0##-####-###"), _templates("06#-####-###"), "SID", _formatted("#########"),
    ),
    "TR": _Country(
        "Turkey", ("tr_TR",), _DEFAULT_POSTCODE, _templates("(###)-###-####"), _templates("(###)-###-####"),
    ),
    "UA": _Country(
        # Letters in Ukrainian phone numbers are a quirk of the API ("(096) G52-8383").
        "Ukraine", ("uk_UA",), _DEFAULT_POSTCODE, _templates("(0##) @##-####"), _templates("(0##) @##-####"),
    ),
    "US": _Country(
        "United States", ("en_US",), _DEFAULT_POSTCODE,
        _templates("(###) ###-####"), _templates("(###) ###-####"), "SSN", _formatted("###-##-####"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class _Pools:
    """Faker-made values of one nationality; names carry their ASCII e-mail form alongside."""

    male_first: tuple[tuple[str, str], ...]
    female_first: tuple[tuple[str, str], ...]
    last: tuple[tuple[str, str], ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    states: tuple[str, ...]
    postcodes: tuple[str, ...]


_NOT_IN_EMAIL = re.compile(r"[^a-z0-9.'-]")


def _email_part(name: str) -> str:
    """The ASCII form of a name as the API writes it in e-mails: transliterated, no spaces, lower case."""
    # Transliteration can leave marks such as "`" for the Persian ain; only plain characters are kept.
    return _NOT_IN_EMAIL.sub("", unidecode(name).lower())


def _ukrainian_latin(text: str) -> str:
    """Ukrainian in Latin letters as the API shows it ("Lvivska", not "L'vivs'ka oblast'")."""
    return unidecode(text.replace(" область", "")).replace("'", "")


def _capitalized(text: str) -> str:
    """``text`` with a capital first letter (Faker writes French streets as "rue ...", the API "Rue ...")."""
    return text[:1].upper() + text[1:]


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    """Non-empty stripped values, first occurrence kept, in draw order (so pools are deterministic)."""
    return tuple(dict.fromkeys(v for v in (value.strip() for value in values) if v))


def _draw(fakers: list[Faker], method: Callable[[Faker], str]) -> tuple[str, ...]:
    """Distinct values of ``method`` over ``_POOL_DRAWS`` calls, spread over the given locales."""
    return _distinct(method(fakers[i % len(fakers)]) for i in range(_POOL_DRAWS))


def _names(values: tuple[str, ...], latin: Callable[[str], str] | None) -> tuple[tuple[str, str], ...]:
    """Names paired with their e-mail form.

    Faker's abbreviations and sort forms ("Hans-H.", "West-Francië, van") are dropped, as are names
    whose e-mail form would be empty.
    """
    shown = _distinct(map(latin, values)) if latin else values
    # Letters, spaces, hyphens, apostrophes, and the zero-width non-joiner of Persian names.
    plain = (name for name in shown if all(c.isalpha() or c in " -'\u200c" for c in name))
    pairs = ((name, _email_part(name)) for name in plain)
    return tuple((name, email) for name, email in pairs if any(c.isalnum() for c in email))


_CITY_AND_STATE: dict[str, tuple[str, str | None]] = {
    "AU": ("city", "state"),
    "BR": ("city", "estado_nome"),
    "CA": ("city", "province"),
    "DE": ("city", "state"),
    "DK": ("city_name", "state"),
    "ES": ("city", "autonomous_community"),
    "FI": ("city_name", "state"),
    "FR": ("city", "department_name"),
    "GB": ("city", "county"),
    "IE": ("city", "county"),
    "IN": ("city_name", "state"),
    "IR": ("city", "state"),
    "MX": ("city", "state"),
    "NL": ("city", "province"),
    "NO": ("city", None),
    "NZ": ("city", None),
    "US": ("city", "state"),
}
"""The Faker methods giving a city and a state (None: Faker has none, ``_STATE_LISTS`` is used)."""
_STATE_LISTS = {"NO": _NO_COUNTIES, "NZ": _NZ_REGIONS}


def _build_pools(nat: str) -> _Pools:
    """The pools of one nationality, drawn from Faker with a fixed seed."""
    fakers = []
    for locale in _COUNTRIES[nat].locales:
        fake = Faker(locale)
        fake.seed_instance(_POOL_SEED)
        fakers.append(fake)
    latin = _ukrainian_latin if nat == "UA" else None
    male_first = _names(_draw(fakers, methodcaller("first_name_male")), latin)
    female_first = _names(_draw(fakers, methodcaller("first_name_female")), latin)
    last = _names(_draw(fakers, methodcaller("last_name")), latin)

    postcodes: tuple[str, ...] = ()
    if nat == "TR":
        # The API's Turkish streets are "<name> Cd"; its cities and states are both provinces.
        streets = _distinct(f"{name} {kind}" for (name, _), kind in zip(last, itertools.cycle(("Cd", "Sk"))))
        cities = states = _TR_PROVINCES
    elif nat == "UA":
        streets = _draw(fakers, lambda f: _ukrainian_latin(f.street_name()))
        cities = _draw(fakers, lambda f: _ukrainian_latin(f.city_name()))
        states = _draw(fakers, lambda f: _ukrainian_latin(f.region()))
    elif nat == "RS":
        streets = _draw(fakers, methodcaller("street_name"))
        cities, states = _RS_CITIES, _RS_DISTRICTS
    elif nat == "CH":
        streets = _draw(fakers, lambda f: _capitalized(f.street_name()))
        # de_CH has real Swiss towns, fr_CH invents them.
        cities = _draw(fakers[:1], methodcaller("city_name"))
        states = _draw(fakers, methodcaller("canton_name"))
    else:
        city, state = _CITY_AND_STATE[nat]
        streets = _draw(fakers, lambda f: _capitalized(f.street_name()))
        cities = _draw(fakers, methodcaller(city))
        states = _draw(fakers, methodcaller(state)) if state else _STATE_LISTS[nat]
        if _COUNTRIES[nat].postcodes_from_faker:
            postcodes = _draw(fakers, methodcaller("postcode"))
    if nat in ("BR", "RS"):
        # The API's BR and RS street lists carry trailing spaces on some entries ("Rua Dezessete ").
        streets = tuple(name + " " if i % 3 == 0 else name for i, name in enumerate(streets))
    return _Pools(male_first, female_first, last, streets, cities, states, postcodes)


@cache
def _pools(nat: str) -> _Pools:
    """The pools of a nationality, built on first use and shared by every source in the process."""
    # Two threads racing on a first use may both build; the builds are identical, so either result does.
    return _build_pools(nat)


@cache
def _passwords() -> tuple[str, ...]:
    """Weak passwords like the API's list: words, names, digit runs, at most 8 characters."""
    fake = Faker("en_US")
    fake.seed_instance(_POOL_SEED)
    words = [fake.word() for _ in range(200)] + [fake.first_name().lower() for _ in range(200)]
    words += [f"{fake.word()}{fake.random_digit()}" for _ in range(60)]
    words += ["111222", "123123", "123456", "1234", "1717", "654321", "696969", "852456", "qqqqqq", "zzzzzz"]
    return _distinct(word[:8] for word in words)


def _iso(instant: datetime) -> str:
    """A naive UTC instant as the API writes dates: ISO 8601 with milliseconds and a ``Z``."""
    return instant.isoformat(timespec="milliseconds") + "Z"


def _age(born: datetime, now: datetime) -> int:
    """Whole years from ``born`` to ``now``, counting a year only once its anniversary has passed."""
    before_anniversary = (now.month, now.day, now.time()) < (born.month, born.day, born.time())
    return now.year - born.year - before_anniversary


class SyntheticSource:
    """A ``ProfileSource`` of made-up randomuser.me 1.4 users: the same seed gives the same batches."""

    name: Source = "synthetic"
    api_version: str | None = "1.4"
    """The API version whose shape the generated profiles have."""

    def __init__(self, seed: int | str = 0, *, now: datetime | None = None) -> None:
        if now is not None:
            if now.tzinfo is None:
                raise ValueError("now must be timezone-aware")
            if now < _EARLIEST_NOW:
                raise ValueError(f"now is before {_EARLIEST_NOW:%Y-%m-%d}, the latest date generated")
        self.seed = seed
        """The seed; an int and its decimal string give the same profiles."""
        self.now = now
        """The instant ages are computed at; None means the current UTC time at each batch."""
        # Seeded from a digest of the seed's text rather than the seed itself: Random(-1) equals Random(1),
        # a str with a lone surrogate cannot seed Random, and 7 and "7" (typed on a command line) should
        # give the same profiles.
        material = f"userpulse-synthetic:{seed}".encode("utf-8", "surrogatepass")
        self._rng = random.Random(int.from_bytes(hashlib.sha256(material).digest(), "big"))

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """``count`` users (1..5000) of the given nationalities (uniformly any of the 21 when empty)."""
        check_batch_size(count)
        nats = check_nationalities(nationalities) or NATIONALITIES
        now = (datetime.now(UTC) if self.now is None else self.now).astimezone(UTC).replace(tzinfo=None)
        rng = self._rng
        passwords = _passwords()
        return [_profile(rng, _pick(rng.random, nats), now, passwords) for _ in range(count)]


def _profile(rng: random.Random, nat: str, now: datetime, passwords: tuple[str, ...]) -> dict[str, Any]:
    """One user of nationality ``nat`` in the API's shape and key order, with ages at ``now`` (naive UTC)."""
    # Every value is drawn in statement order, so a seed always yields the same profile.
    rand = rng.random
    country = _COUNTRIES[nat]
    pools = _pools(nat)

    male = rand() < 0.5
    if male:
        first, first_ascii = _pick(rand, pools.male_first)
        title = country.male_title
    else:
        first, first_ascii = _pick(rand, pools.female_first)
        title = _pick(rand, country.female_titles)
    last, last_ascii = _pick(rand, pools.last)
    street = {"number": 1 + _below(rand, 9999), "name": _pick(rand, pools.streets)}
    city = _pick(rand, pools.cities)
    state = _pick(rand, pools.states)
    postcode = _pick(rand, pools.postcodes) if pools.postcodes else country.postcode(rand)
    latitude = f"{rand() * 180 - 90:.4f}"
    longitude = f"{rand() * 360 - 180:.4f}"
    offset, description = _pick(rand, TIMEZONES)

    uuid_bits = rng.getrandbits(128)
    username = f"{_pick(rand, _USERNAME_ADJECTIVES)}{_pick(rand, _USERNAME_ANIMALS)}{100 + _below(rand, 900)}"
    password = _pick(rand, passwords)
    salt = "".join(rng.choices(_SALT_CHARS, k=8))
    salted = (password + salt).encode()

    born = _EPOCH + timedelta(milliseconds=_DOB_RANGE_MS[0] + _below(rand, _DOB_SPAN_MS))
    registered = _EPOCH + timedelta(milliseconds=_REGISTERED_RANGE_MS[0] + _below(rand, _REGISTERED_SPAN_MS))
    phone = _pick(rand, country.phone)(rand)
    cell = _pick(rand, country.cell)(rand)
    id_value = country.id_value(rand, male, last, born) if country.id_value else None
    # The API has portraits 0..99 of men and 0..96 of women.
    portrait = f"men/{_below(rand, 100)}.jpg" if male else f"women/{_below(rand, 97)}.jpg"

    return {
        "gender": "male" if male else "female",
        "name": {"title": title, "first": first, "last": last},
        "location": {
            "street": street,
            "city": city,
            "state": state,
            "country": country.country,
            "postcode": postcode,
            "coordinates": {"latitude": latitude, "longitude": longitude},
            "timezone": {"offset": offset, "description": description},
        },
        "email": f"{first_ascii}.{last_ascii}@example.com",
        "login": {
            "uuid": str(uuid.UUID(int=uuid_bits, version=4)),
            "username": username,
            "password": password,
            "salt": salt,
            "md5": hashlib.md5(salted, usedforsecurity=False).hexdigest(),
            "sha1": hashlib.sha1(salted, usedforsecurity=False).hexdigest(),
            "sha256": hashlib.sha256(salted).hexdigest(),
        },
        "dob": {"date": _iso(born), "age": _age(born, now)},
        "registered": {"date": _iso(registered), "age": _age(registered, now)},
        "phone": phone,
        "cell": cell,
        "id": {"name": country.id_name, "value": id_value},
        "picture": {
            "large": f"https://randomuser.me/api/portraits/{portrait}",
            "medium": f"https://randomuser.me/api/portraits/med/{portrait}",
            "thumbnail": f"https://randomuser.me/api/portraits/thumb/{portrait}",
        },
        "nat": nat,
    }
