"""Reading a user's YAML (or JSON) file, bounded: the one way configs and profiles are read.

A file is read only when it is a regular file (never a FIFO, a device or a folder) of at most
:data:`MAX_BYTES`. Its YAML may use at most :data:`MAX_ALIASES` aliases, nest at most :data:`MAX_DEPTH`
levels and expand (aliases counted in full) to at most :data:`MAX_NODES` values; every mapping key is
non-empty text (a profile may also use integers), and no key appears twice in one mapping (YAML would
keep the last silently). Anything else raises :class:`YamlFileError` with one line naming the file and
what is wrong (a value is never printed in full: :func:`kdrepro.values.short`); the config layer reports it as a
configuration error.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .values import cut, short

#: the largest config or profile file read (bytes)
MAX_BYTES = 1 << 20
#: the most YAML aliases (``*name``) one file may use
MAX_ALIASES = 100
#: the deepest nesting of mappings and lists in one file
MAX_DEPTH = 32
#: the most values a file may expand to, an alias counted as a copy of what it names (a "billion laughs"
#: file of a few aliases expands to billions)
MAX_NODES = 100_000


class YamlFileError(ValueError):
    """A config or profile file (or ``--set`` value) that is not bounded, well-formed YAML; one line."""


def _expanded_size(node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for, every alias counted in full (linear in the distinct nodes)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a recursive alias (YAML allows a node to contain itself) counts once
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            total = 1
        memo[key] = min(total, MAX_NODES + 1)
    return memo[key]


class _Loader(yaml.SafeLoader):
    """A safe loader that counts aliases, limits depth and refuses duplicate or non-string keys."""

    #: whether integer keys are accepted too (a profile's ``matched_steps: {300: 226}``)
    integer_keys = False

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"uses more than {MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not ((isinstance(key, str) and key) or (self.integer_keys and type(key) is int)):
                allowed = "non-empty text or integers" if self.integer_keys else "non-empty text"
                raise _Refused(f"line {line}: the key {short(key)} is not a name; keys are {allowed}")
            if key in seen:
                raise _Refused(f"line {line}: the key {short(key)} appears twice in one mapping; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


class _Refused(yaml.YAMLError):
    """A limit of this module (not a syntax error)."""


def load_yaml(path: str | os.PathLike, what: str = "config file", integer_keys: bool = False) -> Any:
    """The content of the YAML/JSON file ``path``, bounded as the module says; ``what`` names it in errors;
    ``integer_keys`` accepts integers as keys besides text."""
    text = str(path)
    if not text.strip():
        raise YamlFileError(f"{what} '': empty path; give the path of a YAML or JSON file")
    p, where = Path(path), cut(text, 300)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise YamlFileError(f"{what} {where} does not exist") from None
    except OSError as err:
        raise YamlFileError(f"{what} {where} cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise YamlFileError(f"{what} {where} is a folder; give a YAML or JSON file")
    if not stat.S_ISREG(st.st_mode):
        raise YamlFileError(f"{what} {where} is not a regular file (a pipe or a device); give a YAML or JSON file")
    if st.st_size > MAX_BYTES:
        raise YamlFileError(f"{what} {where} is {st.st_size} bytes, more than the {MAX_BYTES} a config may have")
    try:
        raw = p.read_bytes()[:MAX_BYTES + 1]
        source = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise YamlFileError(f"{what} {where} cannot be read ({cut(str(err), 120)})") from None
    return parse_yaml(source, f"{what} {where}", integer_keys)


def parse_yaml(source: str, what: str, integer_keys: bool = False) -> Any:
    """YAML text, bounded as the module says (aliases, depth, size, keys); ``what`` starts every error."""
    if len(source) > MAX_BYTES:
        raise YamlFileError(f"{what} is longer than the {MAX_BYTES} characters a config may have")
    loader = _Loader(source)
    loader.integer_keys = integer_keys
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise _Refused(f"expands to more than {MAX_NODES} values (YAML aliases repeat what they name)")
        return loader.construct_document(node) if node is not None else None
    except _Refused as err:
        raise YamlFileError(f"{what} {err}") from None
    except RecursionError:
        raise YamlFileError(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as err:
        first = (str(err).strip().splitlines() or ["?"])[0]
        raise YamlFileError(f"{what} is not valid YAML/JSON ({cut(first, 120)})") from None
    finally:
        loader.dispose()
