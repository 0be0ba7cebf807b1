"""What every command shares: the store option, output (text or ``--json``), progress bars,
the threshold options and one spelling per concept (``--protocol``, ``--clip-model``,
``--quiet``), with old spellings kept as deprecated aliases that warn once per use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from carlos.config import PAPER_CONSISTENCY_MIN, PAPER_STRENGTH_MAX, Thresholds, default_paths
from carlos.errors import InvalidInputError

Progress = Callable[[int, int], None]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON under ``--json``, else ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=json_default, ensure_ascii=False))
    else:
        print(text)


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays; anything else as text."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def open_store(args: argparse.Namespace):  # noqa: ANN201 - Store, imported lazily
    from carlos.store.store import Store

    target = getattr(args, "store", None) or args.db
    return Store.open(target if target else default_paths().store)


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    s = None if args.no_strength_filter else args.strength_max
    c = None if args.no_consistency_filter else args.consistency_min
    return Thresholds(strength_max=s, consistency_min=c)


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strength-max",
        type=float,
        default=PAPER_STRENGTH_MAX,
        help=f"exclude LoRAs stronger than this (default {PAPER_STRENGTH_MAX})",
    )
    p.add_argument(
        "--consistency-min",
        type=float,
        default=PAPER_CONSISTENCY_MIN,
        help=f"exclude LoRAs less consistent than this (default {PAPER_CONSISTENCY_MIN})",
    )
    p.add_argument("--no-strength-filter", action="store_true", help="disable the Strength filter")
    p.add_argument("--no-consistency-filter", action="store_true", help="disable the Consistency filter")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")


class DeprecatedAlias(argparse.Action):
    """An old option spelling: does what the new one does and says so on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        print(f"warning: {option} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False, **kwargs: Any) -> None:
    """Accept ``old`` as a deprecated spelling of ``new`` (same ``dest``; ``flag``: a switch)."""
    if flag:
        kwargs.update(nargs=0, const=True)
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, **kwargs)


def add_identity(p: argparse.ArgumentParser) -> None:
    """``--reviewer EMAIL`` and ``--secrets FILE``: who acts, checked by the library against the
    reviewer list (``[carlos] reviewers`` of secrets.toml, or ``$CARLOS_REVIEWERS``)."""
    p.add_argument(
        "--reviewer",
        metavar="EMAIL",
        help="who acts, recorded in the audit log and checked against the reviewer list (default: $CARLOS_REVIEWER, else your user name)",
    )
    p.add_argument(
        "--secrets",
        metavar="FILE",
        help="read [carlos] reviewers from this secrets.toml (default: ~/.streamlit/ and the project's .streamlit/secrets.toml)",
    )


def acting_user(args: argparse.Namespace):  # noqa: ANN201 - CurrentUser, imported lazily
    """The CurrentUser of ``--reviewer`` (default ``$CARLOS_REVIEWER`` or the OS user); the
    library checks it against the policy of ``--secrets`` (or the default files) at each write."""
    from carlos.review.access import CurrentUser, local_identity

    name = (args.reviewer or "").strip() or local_identity()
    if args.secrets and not Path(args.secrets).expanduser().is_file():
        raise InvalidInputError(f"--secrets {args.secrets}: no such file")
    return CurrentUser.local(name, mode="cli", secrets_files=None if not args.secrets else [args.secrets])


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_clip_model(p: argparse.ArgumentParser, default: str, help: str = "CLIP registry name") -> None:
    from carlos.models.clip_registry import list_clip_models

    names = list_clip_models()
    p.add_argument("--clip-model", default=default, choices=names, metavar="NAME", help=f"{help}: {', '.join(names)} (default {default})")
    add_alias(p, "--clip", "--clip-model", "clip_model", choices=names)


def add_protocol(p: argparse.ArgumentParser, default: str) -> None:
    from carlos.characterize.engine import PROTOCOLS

    p.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default=default,
        help="; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items()),
    )
    add_alias(p, "--profile", "--protocol", "protocol", choices=list(PROTOCOLS))


def add_prompt_set(p: argparse.ArgumentParser, what: str) -> None:
    """``--prompt-set NAME``: a registered prompt set (default: the authors', ``carlos-authors``)."""
    from carlos.config import DEFAULT_PROMPT_SET
    from carlos.data.prompts import list_prompt_sets

    names = list_prompt_sets()
    p.add_argument(
        "--prompt-set",
        default=DEFAULT_PROMPT_SET,
        choices=names,
        metavar="NAME",
        help=f"{what}: {', '.join(names)} (default {DEFAULT_PROMPT_SET}, the authors' set; `python -m carlos prompt-sets` lists them)",
    )


def add_trigger(p: argparse.ArgumentParser) -> None:
    """``--trigger WORD``, repeatable: the trigger words, in order."""
    p.add_argument(
        "--trigger",
        action="append",
        metavar="WORD",
        help="a trigger word of the LoRA; each LoRA prompt gets ', WORD' appended, for every --trigger in order "
        "(repeat it for several words; base images never get them)",
    )


def add_backend(p: argparse.ArgumentParser, default: str) -> None:
    from carlos.characterize.engine import CLIP_FOR_BACKEND

    p.add_argument(
        "--backend",
        choices=list(CLIP_FOR_BACKEND),
        default=default,
        help="tiny: local random-weight demo pipeline; sdxl: real SDXL base 1.0; sdxl-random: SDXL architecture, random weights",
    )


def progress_bar(desc: str, *, unit: str = "it", disabled: bool = False) -> tuple[Any, Progress | None]:
    """(bar, update) for a library ``progress(done, total)`` callback; (None, None) when disabled."""
    if disabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


@contextlib.contextmanager
def lazy_progress_bar(desc: str, *, disabled: bool = False) -> Iterator[Progress]:
    """A ``progress(done, total)`` callback whose bar appears only once work starts (a cached
    result draws none), closed on leaving."""
    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(desc, disabled=disabled))
        if bars[0][1] is not None:
            bars[0][1](done, total)

    try:
        yield update
    finally:
        for bar, _ in bars:
            close(bar)


def close(bar: Any) -> None:
    if bar is not None:
        bar.close()


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t.replace("_", "")) for t in csv_list(text))
    except ValueError:
        raise InvalidInputError(f"expected comma-separated integers, got {text!r}") from None


def hits_text(result: Any) -> str:
    """A search result as lines: header, notes, one line per hit."""
    lines = [
        f"{result.retriever}: {len(result.hits)} hits for {result.query!r} "
        f"({result.n_excluded} of {result.n_candidates} removed by the thresholds)"
    ]
    lines += [f"  note: {n}" for n in result.notes]
    for h in result.hits:
        flags = f"  [{'; '.join(h.flags)}]" if h.flags else ""
        lines.append(f"{h.rank:3d}. {h.score:+.3f}  {h.name[:60]:60s}  Str {h.strength:5.2f} Cons {h.consistency:.3f}  {h.lora_id}{flags}")
    return "\n".join(lines)
