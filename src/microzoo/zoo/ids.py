"""Readable model ids in the zoo's style: an adjective and an animal, ``affable-shark``.

About 100 x 100 pairs; :func:`new_model_name` draws until it finds one not taken and adds a number
only when (nearly) all are taken. :func:`check_model_name` and :func:`check_version` say which
names a zoo accepts: they become folder names and URL path segments.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from microzoo.errors import UploadError

ADJECTIVES = """
affable agile amiable ample amused ardent artful astute audacious balanced bold brave breezy bright
brisk bubbly calm candid careful charming cheerful civil clever cosy courteous crisp curious dapper
daring dazzling decent deft devoted diligent discreet dynamic eager earnest easy efficient elegant
eminent emphatic energetic enthusiastic exact fair faithful fearless fervent fine fluent focused frank
friendly frugal gentle genial glad gleaming grand gracious gleeful happy hardy helpful honest hopeful
humble idealistic impartial impressive incredible independent ingenious innocent intrepid jolly jovial
joyful keen kind lucid lively loyal lucky merry modest neat nice noble observant passionate patient
placid plucky polite powerful practical proud quiet rapid resolute shiny sincere smart splendid steady
""".split()

ANIMALS = """
albatross alpaca ant antelope badger bat bear beaver bee bison boar buffalo camel cat chameleon cheetah
chicken chipmunk cobra cod crab crane cricket crow deer dingo dog dolphin donkey dove dragonfly duck
eagle eel elephant elk emu falcon ferret finch fish flamingo fox frog gazelle gecko giraffe goat goose
gorilla hamster hare hawk hedgehog heron hippo horse hyena ibex jaguar jellyfish kangaroo kiwi koala
lemur leopard lion lizard llama lobster lynx macaw magpie mole moose moth mouse octopus orca ostrich
otter owl ox panda panther parrot pelican penguin pig pigeon puffin rabbit raccoon rat raven rhino
salmon seal shark sheep shrimp snail snake sparrow squid swan tiger toad turtle walrus whale wolf zebra
""".split()

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,98}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")


def new_model_name(taken: Callable[[str], bool], *, tries: int = 200) -> str:
    """A random adjective-animal name for which ``taken(name)`` is false.

    >>> new_model_name(lambda name: False).count("-") >= 1
    True
    """
    for attempt in range(tries):
        name = f"{secrets.choice(ADJECTIVES)}-{secrets.choice(ANIMALS)}"
        if attempt >= tries // 2:  # the pairs are (nearly) used up: add a number
            name = f"{name}-{secrets.randbelow(10_000)}"
        if not taken(name):
            return name
    raise RuntimeError("no free model name found; the zoo holds too many models for adjective-animal names")


def check_model_name(name: str) -> str:
    """``name`` if a zoo can use it as a model id (lower case letters, digits, ``.-_``; no ``/``).

    >>> check_model_name("affable-shark")
    'affable-shark'
    """
    if not _NAME.fullmatch(name) or name.endswith(".zip"):
        raise UploadError(
            f"model id {name!r} cannot be used: use lower-case letters, digits, '-', '_' or '.' "
            "(at most 99 characters, no '/'), e.g. 'affable-shark'"
        )
    return name


def check_version(version: str) -> str:
    """``version`` if a zoo can use it (letters, digits, ``.+-_``; e.g. ``1``, ``0.2.1``).

    >>> check_version("0.2.1")
    '0.2.1'
    """
    if not _VERSION.fullmatch(version) or version.endswith(".zip"):
        raise UploadError(
            f"version {version!r} cannot be used: use letters, digits, '.', '+', '-' or '_' "
            "(at most 63 characters), e.g. '1' or '0.2.1'"
        )
    return version


def next_integer_version(existing: list[str]) -> str:
    """The next free integer version after the integer versions in ``existing`` (``"1"`` for none).

    >>> next_integer_version(["1", "2", "0.5.0"])
    '3'
    """
    numbers = [int(v) for v in existing if v.isdigit()]
    candidate = max(numbers, default=0) + 1
    while str(candidate) in existing:
        candidate += 1
    return str(candidate)
