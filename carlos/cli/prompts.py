"""``prompt-sets``: the registered prompt sets (where each comes from, counts, categories, hash) and their prompts."""

from __future__ import annotations

import argparse
from typing import Any

from carlos.cli.common import add_json, emit


def _source_text(src: dict[str, Any]) -> str:
    where = src["path"] if src["present"] else f"absent (expected at {src['path']}; run `{src.get('fetch')}`)"
    if src["kind"] == "wheel":
        return f"{src['member']} in the {src['wheel']} wheel (sha256 {src['sha256']}), {where}"
    return f"file {where}"


def _list_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        head = f"{r['name']}{'  (default)' if r['default'] else ''}"
        if not r["available"]:
            lines += [head, f"  unavailable: {r['error']}", f"  source: {_source_text(r['source'])}"]
            continue
        n_sub = sum(len(c["subcategories"]) for c in r["categories"])
        lines += [
            f"{head}  {r['counts']['index']} index / {r['counts']['query']} query prompts, "
            f"{len(r['categories'])} categories, {n_sub} subcategories, content hash {r['content_hash']}",
            f"  source: {_source_text(r['source'])}",
        ]
        for c in r["categories"]:
            lines.append(f"  {c['name']}: {'; '.join(c['subcategories'])}")
    return "\n".join(lines)


def _show(name: str) -> tuple[dict[str, Any], str]:
    from carlos.data.prompt_set import SPLITS
    from carlos.data.prompts import get_prompt_set

    pset = get_prompt_set(name)
    data: dict[str, Any] = {"name": pset.id, "content_hash": pset.content_hash}
    lines = [f"{pset.id}  (content hash {pset.content_hash})"]
    for split in SPLITS:
        prompts = pset.prompts(split)
        data[split] = [{"text": p.text, "category": p.category, "subcategory": p.subcategory, "sub_index": p.sub_index} for p in prompts]
        lines.append(f"\n{split} prompts ({len(prompts)}):")
        last = None
        for p in prompts:
            if (p.category, p.subcategory) != last:
                lines.append(f"  {p.category} / {p.subcategory}")
                last = (p.category, p.subcategory)
            lines.append(f"    {p.sub_index + 1}. {p.text}")
    return data, "\n".join(lines)


def _prompt_sets(args: argparse.Namespace) -> int:
    from carlos.config import DEFAULT_PROMPT_SET
    from carlos.data.prompts import describe_prompt_set, list_prompt_sets

    if args.show:
        data, text = _show(args.show)
        emit(args, data, text)
        return 0
    rows = [{**describe_prompt_set(n), "default": n == DEFAULT_PROMPT_SET} for n in list_prompt_sets()]
    emit(args, rows, _list_text(rows))
    return 0


def register(sub: Any) -> None:
    """``prompt-sets``."""
    from carlos.data.prompts import list_prompt_sets

    names = list_prompt_sets()
    p = sub.add_parser(
        "prompt-sets",
        help="the registered prompt sets: source (file, or wheel member and sha256), counts per split, categories, content hash",
    )
    p.add_argument("--show", choices=names, metavar="NAME", help=f"print the prompts of one set per split ({', '.join(names)})")
    add_json(p)
    p.set_defaults(func=_prompt_sets)
