"""The GX project: the committed one, written from the suite; its runtime copy; the results it stores.

The committed GX project in ``great_expectations/gx/`` holds the expectation suite, the
validation definition and the checkpoint. At run time that project is copied under the
stockops home (``<home>/gx``) so validation results and Data Docs are written there and
the repository stays read-only. :func:`write_gx_project` (re)writes the committed project
from :func:`stockops.data.suite.build_expectations` (``python -m stockops gx-init``).

Every run stores a result and renders a Data Docs page: :func:`prune_results` keeps the newest.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

from stockops.core.settings import Settings
from stockops.data.suite import SUITE_NAME, TICKER_COL, build_expectations

DATASOURCE_NAME = "stockops_pandas"
ASSET_NAME = "prices"
BATCH_DEFINITION_NAME = "whole_frame"
VALIDATION_DEFINITION_NAME = "stock_prices_validation"
CHECKPOINT_NAME = "stock_prices_checkpoint"

DOCS_SITE = "local_site"
DOCS_INDEX_LIMIT = 36  # the Data Docs index lists (and loads) the newest 36 results (two days of 18 tickers)


@lru_cache(maxsize=4)
def _gx_context(source: Path, work: Path):
    """A file context on the runtime copy of the committed project (results + Data Docs there); once per process."""
    import great_expectations as gx

    shutil.copytree(source / "gx", work / "gx", dirs_exist_ok=True, ignore=shutil.ignore_patterns("uncommitted"))
    return gx.get_context(mode="file", project_root_dir=str(work))


def prune_results(settings: Settings, keep: int) -> int:
    """Keep the newest ``keep`` GX validation results (and their Data Docs pages); returns how many went.

    Every run stores a result (~50 KB) and renders a page (~100 KB): 18 tickers a day would grow
    without bound. The stockops result of every validation stays in each ticker's ``validations/``.
    """
    root = settings.gx_work_dir / "gx" / "uncommitted"
    results = sorted((root / "validations").glob(f"{SUITE_NAME}/*/*/*.json"), key=lambda p: p.parent.name)
    gone = results[:-keep] if keep > 0 else results
    for path in gone:
        relative = path.relative_to(root / "validations")
        page = (settings.data_docs_dir / "validations" / relative).with_suffix(".html")
        for leaf in (path, page):
            leaf.unlink(missing_ok=True)
            for folder in (leaf.parent, leaf.parent.parent):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return len(gone)


def write_gx_project(project_root: Path) -> Path:
    """(Re)write the committed GX project from :func:`build_expectations`; idempotent."""
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.expectation_suite import ExpectationSuite

    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    datasource = context.data_sources.add_or_update_pandas(name=DATASOURCE_NAME)
    asset = next((a for a in datasource.assets if a.name == ASSET_NAME), None) or \
        datasource.add_dataframe_asset(name=ASSET_NAME)
    batch_definition = next((b for b in asset.batch_definitions if b.name == BATCH_DEFINITION_NAME), None) or \
        asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)
    classes = {cls.expectation_type: cls for cls in vars(gxe).values()
               if isinstance(cls, type) and hasattr(cls, "expectation_type")}
    suite = ExpectationSuite(name=SUITE_NAME, expectations=[
        classes[e["type"]](**e["kwargs"], severity=e["severity"]) for e in build_expectations()
    ])
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=VALIDATION_DEFINITION_NAME, data=batch_definition, suite=suite))
    context.checkpoints.add_or_update(gx.Checkpoint(
        name=CHECKPOINT_NAME, validation_definitions=[validation],
        actions=[UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [TICKER_COL, "Date"]},
    ))
    # Rebuilding the index loads every listed result: bound it, or each run costs O(history).
    site = dict(context.variables.data_docs_sites[DOCS_SITE])
    site["site_index_builder"] = {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": DOCS_INDEX_LIMIT}
    context.update_data_docs_site(DOCS_SITE, site)
    return Path(project_root) / "gx"
