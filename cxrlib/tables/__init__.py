"""The results tables, one description each: its name, CSV, key columns, runner, Markdown summary and figure.

Every table is run by one command line, ``python -m cxrlib benchmark --table NAME`` (``benchmark --table NAME
--help`` lists NAME's own options), and the results page (:mod:`cxrlib.report`, ``python -m cxrlib report``) draws
every table's Markdown and figure from its committed CSV through :data:`TABLES`:

=================  =====================================  ======================================================
name               CSV                                    what it holds
=================  =====================================  ======================================================
``main``           ``results/<profile>/metrics.csv``      every method on the development split(s), 3 seeds
``localisation``   the same CSV, ``data`` = ``phantoms``  pixel AUROC and Dice of the anomaly maps on phantoms
``wscxr``          ``results/wscxr_<profile>.csv``        WSCXR's K-shot table and mining × mixing ablation
``crtsc-ablation`` ``results/crtsc_ablation/ablation.csv`` CRTSC's Tables 3, 5 and 6
``ddad-full``      ``results/ddad_full.csv``              DDAD-ASR with the full official recipe
``squid-levers``   ``results/cpu/squid_levers.csv``       issue #23's lever study: SQUID-family configurations
                   (and ``squid_levers_curves.csv``)      on the ``cpu`` budget, per epoch curves beside it
=================  =====================================  ======================================================

This package sits above :mod:`cxrlib.benchmark` and the methods and below :mod:`cxrlib.report` and
:mod:`cxrlib.cli`; no method imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import crtsc_ablation, ddad_full, main_table, squid_levers, wscxr

__all__ = ["Table", "TABLES", "table_names"]


@dataclass(frozen=True)
class Table:
    """One results table.

    Attributes:
        name: its name on the command line (``benchmark --table NAME``).
        title: a few words for help texts.
        csv: its CSV relative to the repository root; ``{profile}`` is filled in.
        key: the columns that identify a row (a re-run replaces or skips the row of the same key).
        add_arguments: adds the table's own options to the ``benchmark`` parser.
        run: the runner: ``run(args) -> exit status``; trains (or reuses) and scores its rows into the CSV.
        markdown: ``markdown(csv_path) -> str``, the table's Markdown summary of the CSV.
        draw: ``draw(csv_path, fig_dir, profile) -> [figure paths]``, its figures from the CSV (``None``: none).
    """
    name: str
    title: str
    csv: str
    key: tuple[str, ...]
    add_arguments: Callable
    run: Callable[..., int]
    markdown: Callable[[Path], str]
    draw: Callable[[Path, Path, str], list[Path]] | None = None

    def csv_path(self, root, profile: str = "cpu") -> Path:
        """The table's CSV under ``root`` for ``profile``."""
        return Path(root) / self.csv.format(profile=profile)


TABLES: dict[str, Table] = {t.name: t for t in [
    Table("main", "every method on the development split", "results/{profile}/metrics.csv", main_table.KEY,
          main_table.add_arguments, main_table.run_main, main_table.markdown,
          lambda csv, fig_dir, profile: main_table.plot_results(csv, profile, fig_dir)),
    Table("localisation", "anomaly maps against phantom lesion masks", "results/{profile}/metrics.csv",
          main_table.KEY, main_table.add_arguments, main_table.run_localisation, main_table.localisation_markdown),
    Table("wscxr", "WSCXR K-shot table and mining x mixing ablation", "results/wscxr_{profile}.csv", wscxr.KEY,
          wscxr.add_arguments, wscxr.run, wscxr.markdown,
          lambda csv, fig_dir, profile: [wscxr.figure(wscxr.read_rows(csv), Path(fig_dir) / f"wscxr_{profile}.png")]),
    Table("crtsc-ablation", "CRTSC ablation (Tables 3, 5, 6)", "results/crtsc_ablation/ablation.csv",
          crtsc_ablation.KEY, crtsc_ablation.add_arguments, crtsc_ablation.run, crtsc_ablation.markdown,
          lambda csv, fig_dir, profile: [crtsc_ablation.figure(csv, Path(fig_dir) / "crtsc_ablation.png")]),
    Table("ddad-full", "DDAD-ASR with the full official recipe", "results/ddad_full.csv", ddad_full.KEY,
          ddad_full.add_arguments, ddad_full.run, ddad_full.markdown,
          lambda csv, fig_dir, profile: [ddad_full.figure(csv, Path(fig_dir) / "ddad_full.png")]),
    Table("squid-levers", "issue #23's SQUID-family lever study", "results/{profile}/squid_levers.csv",
          squid_levers.KEY, squid_levers.add_arguments, squid_levers.run, squid_levers.markdown, squid_levers.draw),
]}


def table_names() -> list[str]:
    """The names of :data:`TABLES`, in the order the results page shows them."""
    return list(TABLES)
